"""Unit tests of the Dockerfile parsing layers: lexer, instructions, shell words."""

from __future__ import annotations

import pytest

from pybuild.builder.dump import dump, go_quote
from pybuild.builder.instructions import (
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Instruction,
    Label,
    Onbuild,
    Run,
    Shell,
    User,
    Volume,
    Workdir,
)
from pybuild.builder.lexer import Heredoc, RawNode, lex, split_command, split_lines
from pybuild.builder.parse import parse_dockerfile, parse_duration, parse_instruction
from pybuild.builder.shellwords import expand, expand_words
from pybuild.errors import DockerfileError


def one(text: str) -> Instruction:
    """The single instruction after a ``FROM scratch`` line."""
    stage = parse_dockerfile("FROM scratch\n" + text).stages[0]
    assert len(stage.instructions) == 1
    return stage.instructions[0]


def error_of(text: str) -> DockerfileError:
    with pytest.raises(DockerfileError) as info:
        parse_dockerfile(text)
    return info.value


def node_of(text: str) -> RawNode:
    nodes = split_lines(text)
    assert len(nodes) == 1
    return nodes[0]


# -- heredocs -----------------------------------------------------------------


def test_heredoc_run() -> None:
    node = node_of("RUN <<EOF\necho hello\necho $HOME\nEOF\n")
    assert node.heredocs == [Heredoc("EOF", "echo hello\necho $HOME\n", expand=True, chomp=False)]
    assert (node.start_line, node.end_line) == (1, 4)
    assert node.rest == "<<EOF"


def test_heredoc_typed_run() -> None:
    run = one("RUN python3 <<EOF\nprint(1)\nEOF\n")
    assert isinstance(run, Run)
    assert run.command == "python3 <<EOF"
    assert run.prepend_shell
    assert [doc.name for doc in run.heredocs] == ["EOF"]
    assert run.heredocs[0].content == "print(1)\n"


def test_heredoc_chomp_strips_leading_tabs() -> None:
    node = node_of("RUN <<-EOF\n\techo a\n\t\techo b\n  echo c\n\tEOF\n")
    (doc,) = node.heredocs
    assert doc.chomp
    assert doc.content == "echo a\necho b\n  echo c\n"


def test_heredoc_without_chomp_keeps_tabs_and_needs_exact_terminator() -> None:
    node = node_of("RUN <<EOF\n\techo a\n\tEOF\nEOF\n")
    assert node.heredocs[0].content == "\techo a\n\tEOF\n"
    assert node.end_line == 4


@pytest.mark.parametrize(
    ("word", "name", "expand_body"),
    [
        ("<<EOF", "EOF", True),
        ('<<"EOF"', "EOF", False),
        ("<<'EOF'", "EOF", False),
        ("<<-'EOF'", "EOF", False),
        ('<<E"O"F', "EOF", False),
        ("<<$EOF", "$EOF", True),
        ("<< EOF", "EOF", True),
    ],
)
def test_heredoc_quoted_delimiter_disables_expansion(word: str, name: str, expand_body: bool) -> None:
    node = node_of(f"RUN cat {word}\nhello $USER\n{name}\n")
    (doc,) = node.heredocs
    assert doc.name == name
    assert doc.expand is expand_body
    assert doc.content == "hello $USER\n"


def test_several_heredocs_on_one_line() -> None:
    text = "COPY <<FILE1 <<FILE2 /dest/\ncontent 1\nFILE1\ncontent 2\nFILE2\nRUN true\n"
    nodes = split_lines(text)
    assert [doc.name for doc in nodes[0].heredocs] == ["FILE1", "FILE2"]
    assert [doc.content for doc in nodes[0].heredocs] == ["content 1\n", "content 2\n"]
    assert (nodes[0].end_line, nodes[1].start_line) == (5, 6)
    copy = one(text.replace("RUN true\n", ""))
    assert isinstance(copy, Copy)
    assert copy.sources == []
    assert [doc.name for doc in copy.heredocs] == ["FILE1", "FILE2"]
    assert copy.dest == "/dest/"


def test_heredoc_bodies_follow_in_order_even_when_names_cross() -> None:
    node = node_of("COPY <<X <<Y /dest\nY\nX\nX\nY\n")
    assert [(doc.name, doc.content) for doc in node.heredocs] == [("X", "Y\n"), ("Y", "X\n")]


def test_heredoc_file_descriptor() -> None:
    assert node_of("RUN 3<<EOF\nx\nEOF").heredocs[0].fd == 3


def test_heredoc_mixed_sources() -> None:
    copy = one("COPY a.txt <<inline.txt b.txt /dest/\nhi\ninline.txt\n")
    assert isinstance(copy, Copy)
    assert copy.sources == ["a.txt", "b.txt"]
    assert copy.heredocs[0].name == "inline.txt"


@pytest.mark.parametrize(
    "text",
    [
        "USER <<EOF\n",  # only RUN, COPY and ADD take heredocs
        'RUN ["cat", "<<EOF"]\n',  # not in the exec form
        'RUN echo "<<EOF"\n',  # not when quoted
        "CMD cat <<EOF\n",
    ],
)
def test_no_heredoc(text: str) -> None:
    nodes = split_lines(text + "EOF\n")
    assert nodes[0].heredocs == []
    assert len(nodes) == 2  # the EOF line is an instruction of its own


def test_heredoc_in_onbuild() -> None:
    onbuild = one("ONBUILD RUN <<EOF\necho hi\nEOF\n")
    assert isinstance(onbuild, Onbuild)
    assert isinstance(onbuild.trigger, Run)
    assert onbuild.trigger.heredocs[0].content == "echo hi\n"
    assert onbuild.expression == "RUN <<EOF\necho hi\nEOF"


def test_unterminated_heredoc() -> None:
    err = error_of("FROM scratch\nRUN <<EOF\necho hi\n")
    assert err.message == "unterminated heredoc"
    assert err.line == 2
    assert err.source_line == "RUN <<EOF"


def test_heredoc_as_destination_is_an_error() -> None:
    err = error_of("FROM scratch\nCOPY a <<EOF\nx\nEOF\n")
    assert "heredoc as a destination" in err.message


# -- directives ---------------------------------------------------------------


def test_escape_directive_backtick() -> None:
    text = "# escape=`\nFROM scratch\nRUN dir c:\\ `\n    && echo ok\nCOPY a\\b c\\d\n"
    df = parse_dockerfile(text)
    assert df.escape == "`"
    run, copy = df.stages[0].instructions
    assert isinstance(run, Run)
    assert run.command == "dir c:\\     && echo ok"
    assert (run.line, run.end_line) == (3, 4)
    assert isinstance(copy, Copy)
    assert copy.sources == ["a\\b"]


def test_backtick_escape_in_words_and_expansion() -> None:
    df = parse_dockerfile("# escape=`\nFROM scratch\nENV a=x` y b=c\\d\n")
    inst = df.stages[0].instructions[0]
    assert isinstance(inst, Env)
    assert inst.pairs == [("a", "x` y"), ("b", "c\\d")]
    assert inst.expand({}, df.escape).pairs == [("a", "x y"), ("b", "c\\d")]


def test_directives_are_recorded_case_insensitively() -> None:
    df = parse_dockerfile("# Syntax = docker/dockerfile:1\n#ESCAPE=\\\n# check=skip=all\nFROM scratch\n")
    assert [(d.name, d.value, d.line) for d in df.directives] == [
        ("syntax", "docker/dockerfile:1", 1),
        ("escape", "\\", 2),
        ("check", "skip=all", 3),
    ]
    assert df.directive("SYNTAX") == "docker/dockerfile:1"
    assert df.directive("nope") is None


@pytest.mark.parametrize(
    "prefix",
    [
        "# a plain comment\n",
        "\n",
        "# unknown=directive\n",
        "FROM scratch\n",
    ],
)
def test_directive_after_comment_blank_or_instruction_is_ignored(prefix: str) -> None:
    lexed = lex(prefix + "# escape=`\nFROM scratch\nRUN a \\\n b\n")
    assert lexed.escape == "\\"
    assert lexed.directives == []
    assert lexed.nodes[-1].rest == "a  b"


def test_duplicate_directive_is_an_error() -> None:
    err = error_of("# escape=`\n# Escape=`\nFROM scratch\n")
    assert err.message == "only one escape parser directive can be used"
    assert err.line == 2


def test_invalid_escape_value() -> None:
    assert error_of("# escape=x\nFROM scratch\n").line == 1


# -- lines, comments, continuations -------------------------------------------


def test_continuation_drops_comments_and_blank_lines_and_keeps_indentation() -> None:
    node = node_of("RUN echo a \\\n# comment\n\n    b \\\n\tc\n")
    assert node.rest == "echo a     b \tc"
    assert (node.start_line, node.end_line) == (1, 5)


def test_continuation_at_eof() -> None:
    assert node_of("RUN echo hi \\").rest == "echo hi"


def test_escaped_escape_is_not_a_continuation() -> None:
    nodes = split_lines("ENV C trailing\\\\\nENV D x\n")
    assert [n.rest for n in nodes] == ["C trailing\\\\", "D x"]


def test_crlf_and_bom() -> None:
    nodes = split_lines("\ufeffFROM scratch\r\nRUN a \\\r\n  b\r\n")
    assert [(n.instruction, n.rest) for n in nodes] == [("from", "scratch"), ("run", "a   b")]


def test_instruction_keyword_case_and_original() -> None:
    node = node_of("  run   --mount=type=tmpfs,target=/t   echo  hi  ")
    assert node.instruction == "run"
    assert node.keyword == "run"
    assert node.flags == ["--mount=type=tmpfs,target=/t"]
    assert node.rest == "echo  hi"


@pytest.mark.parametrize("text", ["", "\n\n", "# only\n# comments\n\n"])
def test_file_with_no_instructions(text: str) -> None:
    assert error_of(text).message == "file with no instructions"


# -- errors -------------------------------------------------------------------


def test_unknown_instruction_suggests() -> None:
    err = error_of("FROM scratch\n\nRUNN echo hi\n")
    assert err.message == 'unknown instruction "RUNN"'
    assert err.hint == "did you mean RUN?"
    assert err.line == 3
    assert err.source_line == "RUNN echo hi"
    assert str(err) == 'Dockerfile:3: unknown instruction "RUNN" (did you mean RUN?)\n  3 | RUNN echo hi'


def test_unknown_instruction_keeps_spelling_and_filename() -> None:
    with pytest.raises(DockerfileError) as info:
        parse_dockerfile("FROM scratch\ncopyy a b\n", filename="build/Containerfile")
    assert info.value.message == 'unknown instruction "copyy"'
    assert info.value.hint == "did you mean COPY?"
    assert info.value.filename == "build/Containerfile"


def test_unknown_instruction_without_suggestion() -> None:
    assert error_of("FROM scratch\nXYZZY plugh\n").hint is None


def test_instruction_before_from() -> None:
    err = error_of("# comment\nRUN true\nFROM scratch\n")
    assert err.line == 2
    assert "before the first FROM" in err.message


def test_only_args_is_an_error() -> None:
    assert error_of("ARG a=1\n").message == "no FROM instruction"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ENV PATH", "ENV must have two arguments"),
        ("ENV a=b c", "can't find = in"),
        ("ENV =x", "ENV names can not be blank"),
        ("LABEL", "LABEL requires at least one argument"),
        ("COPY onlyone", "COPY requires at least two arguments"),
        ("ADD onlyone", "ADD requires at least two arguments"),
        ("WORKDIR", "WORKDIR requires exactly one argument"),
        ("USER", "USER requires exactly one argument"),
        ("EXPOSE", "EXPOSE requires at least one argument"),
        ("VOLUME", "VOLUME requires at least one argument"),
        ('VOLUME ["/a", " "]', "VOLUME specified can not be an empty string"),
        ("STOPSIGNAL", "STOPSIGNAL requires exactly one argument"),
        ("ARG", "ARG requires at least one argument"),
        ("ARG =1", "ARG names can not be blank"),
        ("RUN", "RUN requires at least one argument"),
        ("SHELL", "SHELL requires at least one argument"),
        ("SHELL /bin/sh -c", "SHELL requires the arguments to be in JSON form"),
        ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK CONNECT TCP 7000", 'Unknown type "CONNECT"'),
        ("HEALTHCHECK --interval=10us CMD x", "cannot be less than 1ms"),
        ("HEALTHCHECK --timeout=soon CMD x", "invalid duration"),
        ("HEALTHCHECK --retries=-1 CMD x", "--retries cannot be negative"),
        ("HEALTHCHECK --retries=x CMD x", "--retries"),
        ("ONBUILD", "ONBUILD requires at least one argument"),
        ('CMD [ "echo", [ "nested" ] ]', "arrays must be comprised of strings only"),
        ("MAINTAINER", "MAINTAINER requires exactly one argument"),
    ],
)
def test_argument_errors(text: str, message: str) -> None:
    err = error_of("FROM scratch\n# comment\n" + text + "\n")
    assert message in err.message
    assert err.line == 3


# -- flags --------------------------------------------------------------------


def test_split_command_flags() -> None:
    assert split_command("COPY --from=a --chown='me:you' -- --odd /x") == (
        "copy",
        ["--from=a", "--chown=me:you"],
        "--odd /x",
    )
    assert split_command("CMD --doit -- [ ]") == ("cmd", ["--doit"], "[ ]")
    assert split_command("RUN --mount=type=secret,id=a\\ b x") == ("run", ["--mount=type=secret,id=a b"], "x")
    assert split_command("RUN -x --y") == ("run", [], "-x --y")


def test_copy_flags() -> None:
    copy = one("COPY --from=build --chown=1:2 --chmod=0644 --link --parents --exclude=*.md --exclude=tmp a b /dest/")
    assert isinstance(copy, Copy)
    assert copy.from_stage == "build"
    assert (copy.chown, copy.chmod, copy.link, copy.parents) == ("1:2", "0644", True, True)
    assert copy.excludes == ["*.md", "tmp"]
    assert copy.sources == ["a", "b"]
    assert copy.dest == "/dest/"
    assert copy.flags[0] == "--from=build"


def test_add_flags() -> None:
    add = one("ADD --checksum=sha256:abc --keep-git-dir=true --link=false --chown=u https://x/y.tgz /")
    assert isinstance(add, Add)
    assert add.checksum == "sha256:abc"
    assert add.keep_git_dir is True
    assert add.link is False
    assert add.chown == "u"
    assert add.chmod is None


def test_run_flags() -> None:
    run = one("RUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t --network=none --security=sandbox make")
    assert isinstance(run, Run)
    assert run.mounts == ["type=cache,target=/c", "type=tmpfs,target=/t"]
    assert (run.network, run.security) == ("none", "sandbox")


def test_from_platform_flag() -> None:
    base = parse_dockerfile("FROM --platform=$BUILDPLATFORM golang AS build\n").stages[0].base
    assert (base.image, base.platform, base.stage_name) == ("golang", "$BUILDPLATFORM", "build")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("COPY --user=me a b", 'unknown flag "--user" for COPY'),
        ("ENV --x=1 a=b", 'unknown flag "--x" for ENV'),
        ("COPY --from=a --from=b x y", 'duplicate flag "--from"'),
        ("COPY --from x y", 'missing a value on flag "--from"'),
        ("COPY --link= x y", 'missing a value on flag "--link"'),
        ("COPY --link=yes x y", "expecting boolean value"),
        ("RUN --network=bridge x", "unsupported network mode"),
        ("RUN --security=lax x", "unsupported security mode"),
        ("HEALTHCHECK --start-periodic=1s CMD x", "unknown flag"),
    ],
)
def test_flag_errors(text: str, message: str) -> None:
    err = error_of("FROM scratch\n" + text + "\n")
    assert message in err.message
    assert err.line == 2


def test_unknown_flag_hint_lists_valid_flags() -> None:
    hint = error_of("FROM scratch\nCOPY --frm=a x y\n").hint
    assert hint is not None
    assert "--from" in hint


# -- exec vs shell form -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "command", "prepend_shell"),
    [
        ('CMD ["echo", "hi there"]', ["echo", "hi there"], False),
        ("CMD []", [], False),
        ("CMD echo hi   there", "echo hi   there", True),
        ("CMD ['echo', 'hi']", "['echo', 'hi']", True),
        ('CMD ["echo", "unterminated]', '["echo", "unterminated]', True),
        ('CMD "[\\"x\\"]"', '"[\\"x\\"]"', True),
        ('CMD ["a"] trailing text', ["a"], False),
    ],
)
def test_cmd_forms(text: str, command: list[str] | str, prepend_shell: bool) -> None:
    cmd = one(text)
    assert isinstance(cmd, Cmd)
    assert cmd.command == command
    assert cmd.prepend_shell is prepend_shell


def test_entrypoint_and_run_forms() -> None:
    entry = one('ENTRYPOINT ["/bin/app", "--flag"]')
    assert isinstance(entry, Entrypoint)
    assert entry.command == ["/bin/app", "--flag"]
    run = one('RUN [ "sh", "-c", "echo \\"$HOME\\"" ]')
    assert isinstance(run, Run)
    assert run.command == ["sh", "-c", 'echo "$HOME"']
    assert not run.prepend_shell
    shell = one('SHELL ["/bin/bash", "-eo", "pipefail", "-c"]')
    assert isinstance(shell, Shell)
    assert shell.shell == ["/bin/bash", "-eo", "pipefail", "-c"]


def test_healthcheck_forms() -> None:
    check = one("HEALTHCHECK --interval=1m30s --timeout=3s --start-period=0s --retries=3 CMD curl -f http://x/")
    assert isinstance(check, Healthcheck)
    assert check.test == ["CMD-SHELL", "curl -f http://x/"]
    assert (check.interval, check.timeout, check.start_period, check.retries) == (90 * 10**9, 3 * 10**9, 0, 3)
    exec_form = one('HEALTHCHECK cmd ["/bin/check", "-q"]')
    assert isinstance(exec_form, Healthcheck)
    assert exec_form.test == ["CMD", "/bin/check", "-q"]
    none = one("HEALTHCHECK NONE")
    assert isinstance(none, Healthcheck)
    assert none.test == ["NONE"]


@pytest.mark.parametrize(
    ("text", "nanos"),
    [("0", 0), ("1.5h", 5_400 * 10**9), ("300ms", 300 * 10**6), ("1m0.5s", 60_500 * 10**6), ("2us", 2_000)],
)
def test_parse_duration(text: str, nanos: int) -> None:
    assert parse_duration(text) == nanos


@pytest.mark.parametrize("text", ["", "5", "s", "1x", ".s", "1s5"])
def test_parse_duration_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_volume_and_expose_forms() -> None:
    assert isinstance(vol := one('VOLUME ["/a", "/b c"]'), Volume)
    assert vol.paths == ["/a", "/b c"]
    assert isinstance(vol := one("VOLUME /a  /b"), Volume)
    assert vol.paths == ["/a", "/b"]
    assert isinstance(expose := one("EXPOSE 80/tcp 53/udp"), Expose)
    assert expose.ports == ["80/tcp", "53/udp"]


def test_copy_json_form_keeps_spaces() -> None:
    copy = one('COPY ["my file", "/dest dir/"]')
    assert isinstance(copy, Copy)
    assert (copy.sources, copy.dest) == (["my file"], "/dest dir/")


# -- ONBUILD ------------------------------------------------------------------


def test_onbuild_nesting() -> None:
    onbuild = one("ONBUILD COPY --chown=app . /src")
    assert isinstance(onbuild, Onbuild)
    assert isinstance(onbuild.trigger, Copy)
    assert onbuild.trigger.chown == "app"
    assert onbuild.expression == "COPY --chown=app . /src"
    assert dump('ONBUILD RUN ["echo", "test"]\nonbuild copy --from=x a b\n') == (
        '(onbuild (run "echo" "test"))\n(onbuild (copy ["--from=x"] "a" "b"))\n'
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ONBUILD ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
        ("ONBUILD FROM alpine", "FROM isn't allowed as an ONBUILD trigger"),
        ("onbuild maintainer me", "MAINTAINER isn't allowed as an ONBUILD trigger"),
        ("ONBUILD RUNN x", 'unknown instruction "RUNN"'),
        ("ONBUILD COPY --bad=1 a b", 'unknown flag "--bad" for COPY'),
    ],
)
def test_onbuild_errors(text: str, message: str) -> None:
    err = error_of("FROM scratch\n" + text + "\n")
    assert err.message == message or message in err.message
    assert err.line == 2


# -- ENV, LABEL, ARG ----------------------------------------------------------


def test_legacy_env() -> None:
    env = one('ENV SCUBA 1 DUBA   "3"')
    assert isinstance(env, Env)
    assert env.pairs == [("SCUBA", '1 DUBA   "3"')]
    assert env.expand({}).pairs == [("SCUBA", "1 DUBA   3")]


def test_env_pairs_keep_quotes_until_expanded() -> None:
    env = one('ENV a=1 b="two words" c=x\\ y d=')
    assert isinstance(env, Env)
    assert env.pairs == [("a", "1"), ("b", '"two words"'), ("c", "x\\ y"), ("d", "")]
    assert env.expand({}).pairs == [("a", "1"), ("b", "two words"), ("c", "x y"), ("d", "")]


def test_env_expansion_uses_values_from_before_the_instruction() -> None:
    env = one("ENV a=1 b=$a c=${a:-unset}")
    assert isinstance(env, Env)
    assert env.expand({"a": "old"}).pairs == [("a", "1"), ("b", "old"), ("c", "old")]
    assert env.expand({}).pairs == [("a", "1"), ("b", ""), ("c", "unset")]


def test_expansion_error_has_location() -> None:
    workdir = parse_dockerfile("FROM scratch\nWORKDIR ${DIR:?must be set}\n").stages[0].instructions[0]
    assert isinstance(workdir, Workdir)
    with pytest.raises(DockerfileError) as info:
        workdir.expand({})
    assert info.value.line == 2
    assert "DIR: must be set" in info.value.message


def test_label_forms() -> None:
    label = one('LABEL maintainer Erik <e@x> "q"')
    assert isinstance(label, Label)
    assert label.pairs == [("maintainer", 'Erik <e@x> "q"')]
    label = one('LABEL a=b "c d"="e f"')
    assert isinstance(label, Label)
    assert label.expand({}).pairs == [("a", "b"), ("c d", "e f")]


def test_global_args_and_scoping() -> None:
    df = parse_dockerfile(
        "ARG VERSION=1.0\nARG BASE\nFROM alpine:${VERSION} AS build\nARG VERSION\nARG OTHER=x y=z\nFROM build\n"
    )
    assert [arg.pairs for arg in df.global_args] == [[("VERSION", "1.0")], [("BASE", None)]]
    build = df.stages[0]
    assert [inst.pairs for inst in build.instructions if isinstance(inst, Arg)] == [
        [("VERSION", None)],
        [("OTHER", "x"), ("y", "z")],
    ]
    assert build.base.expand({"VERSION": "3.19"}).image == "alpine:3.19"
    assert df.stages[1].base.image == "build"
    assert len(df.instructions) == 6
    assert isinstance(df.instructions[0], Arg)


def test_arg_quotes() -> None:
    arg = parse_dockerfile('ARG abc="123 456" def\nFROM x\n').global_args[0]
    assert arg.pairs == [("abc", '"123 456"'), ("def", None)]
    assert arg.expand({}).pairs == [("abc", "123 456"), ("def", None)]
    assert arg.names == ["abc", "def"]


# -- stages -------------------------------------------------------------------


def test_multi_stage() -> None:
    df = parse_dockerfile(
        "FROM golang:1.22 AS Builder\n"
        "WORKDIR /src\n"
        "RUN go build -o /app\n"
        "FROM alpine as runtime\n"
        "COPY --from=builder /app /app\n"
        "USER nobody\n"
        "FROM scratch As Final\n"
        "FROM runtime\n"
    )
    assert [(s.name, s.index, s.base.image) for s in df.stages] == [
        ("builder", 0, "golang:1.22"),
        ("runtime", 1, "alpine"),
        ("final", 2, "scratch"),
        (None, 3, "runtime"),
    ]
    assert [type(inst) for inst in df.stages[0].instructions] == [Workdir, Run]
    assert [type(inst) for inst in df.stages[1].instructions] == [Copy, User]
    assert df.stages[3].instructions == []
    assert df.stage("BUILDER") is df.stages[0]
    assert df.stage("2") is df.stages[2]
    assert df.stage("nope") is None
    assert [type(inst) for inst in df.instructions] == [From, Workdir, Run, From, Copy, User, From, From]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM a AS x\nFROM b AS X\n", 'duplicate stage name "x"'),
        ("FROM a AS 1st\n", "invalid name for build stage"),
        ("FROM a AS\n", "FROM requires either one or three arguments"),
        ("FROM a b c d\n", "FROM requires either one or three arguments"),
        ("FROM\n", "FROM requires either one or three arguments"),
    ],
)
def test_stage_errors(text: str, message: str) -> None:
    assert message in error_of(text).message


# -- instruction-level API ----------------------------------------------------


def test_parse_instruction_directly() -> None:
    node = node_of("workdir /app")
    inst = parse_instruction(node)
    assert isinstance(inst, Workdir)
    assert (inst.path, inst.line, inst.end_line, inst.original) == ("/app", 1, 1, "workdir /app")


# -- shell words --------------------------------------------------------------


def test_expand_words_and_backtick_escape() -> None:
    env = {"A": "x y", "EMPTY": ""}
    assert expand_words('a $A "$A" b\\ c ${EMPTY:-z}', env) == ["a", "x", "y", "x y", "b c", "z"]
    assert expand("a`$A", env, escape="`") == "a$A"
    assert expand("a\\$A", env, escape="`") == "a\\x y"


def test_expand_options() -> None:
    assert expand("$X ${Y:-d} '$Z'", {}, skip_unset=True, raw_quotes=True) == "$X ${Y:-d} '$Z'"
    assert expand("${X/a*/b}", {"X": "xaaa"}) == "xb"
    assert expand("${X%.*}", {"X": "f.tar.gz"}) == "f.tar"
    assert expand("${X%%.*}", {"X": "f.tar.gz"}) == "f"


@pytest.mark.parametrize("word", ["${", "${X", "${X:-y", "'x", '"x', "${X:?}", "${Y?boom}", "${X/a}"])
def test_expand_errors(word: str) -> None:
    with pytest.raises(DockerfileError):
        expand(word, {"X": ""})


def test_go_quote() -> None:
    assert go_quote('a"b\\c\td\x00é♥\u200b\U0001f600') == '"a\\"b\\\\c\\td\\x00é♥\\u200b😀"'


# ---------------------------------------------------------------------------- hostile depth


def test_nested_substitutions_up_to_the_limit_expand_and_deeper_ones_are_a_line_error() -> None:
    from pybuild.builder.shellwords import MAX_NESTING

    def nested(n: int) -> str:
        return "${A:-" * n + "y" + "}" * n

    assert expand(nested(MAX_NESTING - 1), {}) == "y"
    for depth in (MAX_NESTING + 1, 3000, 100_000):
        with pytest.raises(DockerfileError, match="nested too deeply") as info:
            expand(nested(depth), {"A": ""})
        assert len(str(info.value)) < 400  # the word is shortened in the message
    # through the builder's expansion of an instruction, the error names the line
    stage = parse_dockerfile("FROM scratch\nARG A\nENV B=" + nested(3000) + "\n").stages[0]
    env = stage.instructions[1]
    with pytest.raises(DockerfileError, match="nested too deeply"):
        env.expand({}, "\\")


def test_deep_json_arrays_are_refused_at_their_line_without_recursion() -> None:
    for depth in (65, 3000, 200_000):
        with pytest.raises(DockerfileError, match=r"JSON array nested too deeply") as info:
            parse_dockerfile("FROM scratch\nRUN " + "[" * depth + "]" * depth + "\n")
        assert info.value.line == 2 and "Dockerfile:2:" in str(info.value)
        assert len(str(info.value)) < 500
    # a bracket inside a string is not nesting
    run = one('RUN ["echo", "' + "[" * 500 + '"]')
    assert isinstance(run, Run) and run.command == ["echo", "[" * 500]


def test_deep_json_in_manifests_is_a_manifest_error() -> None:
    from pybuild.store.model import Manifest, ManifestError

    with pytest.raises(ManifestError, match="nested too deeply"):
        Manifest.from_bytes(b"[" * 100_000 + b"]" * 100_000)

"""The typed instructions of a Dockerfile (BuildKit's ``instructions/commands.go``), and the parsed file.

Each instruction is a frozen record carrying where it came from (:class:`Meta`).
Variables are not expanded when parsing: that needs the build-time
environment. The instructions whose words BuildKit expands have an
``expand(env, escape)`` method; it expands every word against the *same*
``env`` (the values before the instruction), so ``ENV a=1 b=$a`` gives ``b``
the old ``$a``. :mod:`.parse` makes them from the lexer's nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar, Self, TypeAlias

from pybuild.errors import DockerfileError
from pybuild.records import field, record, replace

from . import shellwords
from .lexer import DEFAULT_ESCAPE, Directive, Heredoc

__all__ = [
    "INSTRUCTION_NAMES",
    "Add",
    "Arg",
    "BaseInstruction",
    "Cmd",
    "Command",
    "Copy",
    "Dockerfile",
    "Entrypoint",
    "Env",
    "Expose",
    "From",
    "Healthcheck",
    "Instruction",
    "Label",
    "Maintainer",
    "Meta",
    "Onbuild",
    "Run",
    "Shell",
    "Stage",
    "Stopsignal",
    "User",
    "Volume",
    "Workdir",
]

INSTRUCTION_NAMES: tuple[str, ...] = (
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
)

@record(frozen=True, slots=True)
class Meta:
    """Where an instruction comes from: location, raw flags and text."""

    filename: str
    line: int
    end_line: int
    flags: list[str]
    original: str
    source_line: str = ""


@record(frozen=True, slots=True, kw_only=True)
class BaseInstruction:
    """Fields and accessors common to every instruction."""

    keyword: ClassVar[str] = ""
    meta: Meta

    @property
    def line(self) -> int:
        return self.meta.line

    @property
    def end_line(self) -> int:
        return self.meta.end_line

    @property
    def flags(self) -> list[str]:
        return self.meta.flags

    @property
    def original(self) -> str:
        return self.meta.original

    def _expander(self, env: Mapping[str, str], escape: str) -> Callable[[str], str]:
        meta = self.meta

        def expand(word: str) -> str:
            try:
                return shellwords.expand(word, env, escape)
            except DockerfileError as exc:
                raise DockerfileError(
                    exc.message,
                    exc.hint,
                    filename=meta.filename,
                    line=meta.line,
                    source_line=meta.source_line or None,
                ) from None

        return expand


Command: TypeAlias = "list[str] | str"


@record(frozen=True, slots=True, kw_only=True)
class From(BaseInstruction):
    """``FROM [--platform=p] image [AS name]``; ``stage_name`` is lower-cased."""

    keyword: ClassVar[str] = "FROM"
    image: str
    stage_name: str | None = None
    platform: str | None = None

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        """Expand the image and platform (with the global ARGs, for FROM)."""
        word = self._expander(env, escape)
        platform = word(self.platform) if self.platform is not None else None
        return replace(self, image=word(self.image), platform=platform)


@record(frozen=True, slots=True, kw_only=True)
class Run(BaseInstruction):
    """``RUN``: exec form gives a list, shell form a string (``prepend_shell``)."""

    keyword: ClassVar[str] = "RUN"
    command: Command
    prepend_shell: bool
    mounts: list[str] = field(default_factory=list)
    network: str | None = None
    security: str | None = None
    heredocs: list[Heredoc] = field(default_factory=list)


@record(frozen=True, slots=True, kw_only=True)
class Cmd(BaseInstruction):
    keyword: ClassVar[str] = "CMD"
    command: Command
    prepend_shell: bool


@record(frozen=True, slots=True, kw_only=True)
class Entrypoint(BaseInstruction):
    keyword: ClassVar[str] = "ENTRYPOINT"
    command: Command
    prepend_shell: bool


def _expand_pairs(pairs: list[tuple[str, str]], word: Callable[[str], str]) -> list[tuple[str, str]]:
    return [(word(key), word(value)) for key, value in pairs]


@record(frozen=True, slots=True, kw_only=True)
class Env(BaseInstruction):
    """``ENV k=v ...`` or legacy ``ENV k v``; values are raw until :meth:`expand`."""

    keyword: ClassVar[str] = "ENV"
    pairs: list[tuple[str, str]]

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        return replace(self, pairs=_expand_pairs(self.pairs, self._expander(env, escape)))


@record(frozen=True, slots=True, kw_only=True)
class Label(BaseInstruction):
    keyword: ClassVar[str] = "LABEL"
    pairs: list[tuple[str, str]]

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        return replace(self, pairs=_expand_pairs(self.pairs, self._expander(env, escape)))


@record(frozen=True, slots=True, kw_only=True)
class Arg(BaseInstruction):
    """``ARG name[=default] ...``; a default of None means none was given."""

    keyword: ClassVar[str] = "ARG"
    pairs: list[tuple[str, str | None]]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.pairs]

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        word = self._expander(env, escape)
        pairs = [(word(name), word(default) if default is not None else None) for name, default in self.pairs]
        return replace(self, pairs=pairs)


@record(frozen=True, slots=True, kw_only=True)
class Expose(BaseInstruction):
    keyword: ClassVar[str] = "EXPOSE"
    ports: list[str]

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        word = self._expander(env, escape)
        return replace(self, ports=[word(port) for port in self.ports])


@record(frozen=True, slots=True, kw_only=True)
class User(BaseInstruction):
    keyword: ClassVar[str] = "USER"
    user: str

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        return replace(self, user=self._expander(env, escape)(self.user))


@record(frozen=True, slots=True, kw_only=True)
class Workdir(BaseInstruction):
    keyword: ClassVar[str] = "WORKDIR"
    path: str

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        return replace(self, path=self._expander(env, escape)(self.path))


@record(frozen=True, slots=True, kw_only=True)
class Volume(BaseInstruction):
    keyword: ClassVar[str] = "VOLUME"
    paths: list[str]

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        word = self._expander(env, escape)
        return replace(self, paths=[word(path) for path in self.paths])


@record(frozen=True, slots=True, kw_only=True)
class Stopsignal(BaseInstruction):
    keyword: ClassVar[str] = "STOPSIGNAL"
    signal: str

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        return replace(self, signal=self._expander(env, escape)(self.signal))


@record(frozen=True, slots=True, kw_only=True)
class Healthcheck(BaseInstruction):
    """``HEALTHCHECK NONE`` or ``HEALTHCHECK [flags] CMD ...``.

    ``test`` is the image-config form: ``["NONE"]``, ``["CMD", arg...]`` (exec
    form) or ``["CMD-SHELL", command]``. Durations are in nanoseconds, 0 meaning
    "not set" (the runtime default), as in the image config.
    """

    keyword: ClassVar[str] = "HEALTHCHECK"
    test: list[str]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@record(frozen=True, slots=True, kw_only=True)
class Shell(BaseInstruction):
    keyword: ClassVar[str] = "SHELL"
    shell: list[str]


@record(frozen=True, slots=True, kw_only=True)
class Onbuild(BaseInstruction):
    """``ONBUILD <instruction>``: ``expression`` is what goes in the image config."""

    keyword: ClassVar[str] = "ONBUILD"
    trigger: Instruction
    expression: str


@record(frozen=True, slots=True, kw_only=True)
class Maintainer(BaseInstruction):
    keyword: ClassVar[str] = "MAINTAINER"
    maintainer: str


@record(frozen=True, slots=True, kw_only=True)
class Add(BaseInstruction):
    """``ADD``; ``heredocs`` are the inline sources (``ADD <<EOF /dest``)."""

    keyword: ClassVar[str] = "ADD"
    sources: list[str]
    dest: str
    heredocs: list[Heredoc] = field(default_factory=list)
    chown: str | None = None
    chmod: str | None = None
    checksum: str | None = None
    keep_git_dir: bool = False
    link: bool = False
    excludes: list[str] = field(default_factory=list)

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        word = self._expander(env, escape)
        return replace(
            self,
            sources=[word(src) for src in self.sources],
            dest=word(self.dest),
            chown=word(self.chown) if self.chown is not None else None,
            chmod=word(self.chmod) if self.chmod is not None else None,
            checksum=word(self.checksum) if self.checksum is not None else None,
            excludes=[word(pattern) for pattern in self.excludes],
        )


@record(frozen=True, slots=True, kw_only=True)
class Copy(BaseInstruction):
    """``COPY``; ``from_stage`` is ``--from`` (a stage name, index or image)."""

    keyword: ClassVar[str] = "COPY"
    sources: list[str]
    dest: str
    heredocs: list[Heredoc] = field(default_factory=list)
    from_stage: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    excludes: list[str] = field(default_factory=list)

    def expand(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> Self:
        word = self._expander(env, escape)
        return replace(
            self,
            sources=[word(src) for src in self.sources],
            dest=word(self.dest),
            from_stage=word(self.from_stage) if self.from_stage is not None else None,
            chown=word(self.chown) if self.chown is not None else None,
            chmod=word(self.chmod) if self.chmod is not None else None,
            excludes=[word(pattern) for pattern in self.excludes],
        )


Instruction: TypeAlias = (
    From
    | Run
    | Cmd
    | Entrypoint
    | Env
    | Arg
    | Label
    | Expose
    | User
    | Workdir
    | Volume
    | Stopsignal
    | Healthcheck
    | Shell
    | Onbuild
    | Maintainer
    | Add
    | Copy
)


@record(frozen=True, slots=True)
class Stage:
    """One build stage: its FROM and the instructions after it."""

    name: str | None
    index: int
    base: From
    instructions: list[Instruction] = field(default_factory=list)


@record(frozen=True, slots=True)
class Dockerfile:
    """A parsed Dockerfile.

    ``global_args`` are the ARGs before the first FROM (usable in FROM lines);
    ``instructions`` lists every instruction in file order, FROMs included.
    """

    filename: str
    escape: str
    directives: list[Directive]
    global_args: list[Arg]
    stages: list[Stage]
    instructions: list[Instruction]

    def directive(self, name: str) -> str | None:
        """The value of a parser directive (``syntax``, ``escape``, ``check``), if given."""
        wanted = name.lower()
        return next((d.value for d in self.directives if d.name == wanted), None)

    def stage(self, ref: str) -> Stage | None:
        """The stage named ``ref`` (case-insensitive) or with index ``ref``."""
        wanted = ref.lower()
        for stage in self.stages:
            if stage.name == wanted:
                return stage
        if ref.isdecimal() and int(ref) < len(self.stages):
            return self.stages[int(ref)]
        return None

"""BuildKit's own parser and shell-lexer test data, run against pybuild's parser.

The data lives in ``<repo>/testdata/conformance`` (copied unchanged from BuildKit:
see ORIGIN.md there; its README gives the formats). Missing data is a failure,
not a skip: every case must pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from pybuild.builder.dump import dump
from pybuild.builder.lexer import split_lines
from pybuild.builder.parse import parse_dockerfile
from pybuild.builder.shellwords import expand, expand_words
from pybuild.errors import DockerfileError

REPO = Path(__file__).resolve().parents[2]
CONFORMANCE = REPO / "testdata" / "conformance"
PARSER_DIR = CONFORMANCE / "buildkit-parser"
SHELL_DIR = CONFORMANCE / "buildkit-shell"
MISSING = pytest.param(None, id="conformance-data-missing")

# The environment of BuildKit's TestShellParser4EnvVars. The README lists
# PWD, SHELL and NULL; the $KOREAN rows need the fourth one as well.
SHELL_ENV: Mapping[str, str] = {
    "PWD": "/home",
    "SHELL": "bash",
    "KOREAN": "한국어",
    "NULL": "",
}


def _read(path: Path) -> str:
    # Go works on bytes: keep any non-UTF-8 byte round-trippable.
    return path.read_bytes().decode("utf-8", "surrogateescape")


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"conformance data missing: {path}")
    return path


# -- buildkit-parser ----------------------------------------------------------


def _parser_cases() -> list[object]:
    if not PARSER_DIR.is_dir():
        return [MISSING]
    return [
        pytest.param(case, id=case.name)
        for case in sorted(PARSER_DIR.iterdir())
        if case.is_dir() and not case.name.startswith("_")
    ]


def _negative_cases() -> list[object]:
    negative = PARSER_DIR / "_negative"
    if not negative.is_dir():
        return [MISSING]
    return [pytest.param(case, id=case.name) for case in sorted(negative.iterdir()) if case.is_dir()]


@pytest.mark.parametrize("case", _parser_cases())
def test_parser_dump(case: Path | None) -> None:
    if case is None:
        pytest.fail(f"conformance data missing: {PARSER_DIR}")
    expected = _read(_require(case / "result")).split("\n")
    got = dump(_read(case / "Dockerfile")).split("\n")
    for number, (want, have) in enumerate(zip(expected, got, strict=False), 1):
        assert have == want, f"{case.name}/result line {number}"
    assert len(got) == len(expected), f"{case.name}: {len(got)} lines, expected {len(expected)}"


def test_parser_case_count() -> None:
    cases = [c for c in _parser_cases() if c is not MISSING]
    assert len(cases) == 33


@pytest.mark.parametrize("case", _negative_cases())
def test_parser_negative(case: Path | None) -> None:
    if case is None:
        pytest.fail(f"conformance data missing: {PARSER_DIR / '_negative'}")
    text = _read(_require(case / "Dockerfile"))
    with pytest.raises(DockerfileError):
        dump(text)
    with pytest.raises(DockerfileError):
        parse_dockerfile(text)


def test_parser_negative_count() -> None:
    assert len([c for c in _negative_cases() if c is not MISSING]) == 4


def test_parser_line_spans() -> None:
    text = _read(_require(PARSER_DIR / "_testfile-line" / "Dockerfile"))
    spans = [(node.start_line, node.end_line) for node in split_lines(text)]
    assert spans == [(5, 5), (11, 12), (17, 31)]
    assert [inst.line for inst in parse_dockerfile(text).instructions] == [5, 11, 17]


# -- buildkit-shell: envVarTest -------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnvVarCase:
    line: int
    source: str
    expected: str


def _env_var_cases() -> list[object]:
    path = SHELL_DIR / "envVarTest"
    if not path.is_file():
        return [MISSING]
    cases: list[object] = []
    for number, raw in enumerate(_read(path).split("\n"), 1):
        line = raw.strip()
        if raw.startswith("#") or not line:
            continue
        platform, source, expected = (part.strip() for part in line.split("|"))
        if platform in ("A", "U"):
            case = EnvVarCase(number, source, expected)
            cases.append(pytest.param(case, id=f"L{number}:{source}"))
    return cases


@pytest.mark.parametrize("case", _env_var_cases())
def test_shell_env_var(case: EnvVarCase | None) -> None:
    if case is None:
        pytest.fail(f"conformance data missing: {SHELL_DIR / 'envVarTest'}")
    if case.expected == "error":
        with pytest.raises(DockerfileError):
            expand(case.source, SHELL_ENV)
    else:
        assert expand(case.source, SHELL_ENV) == case.expected


def test_shell_env_var_count() -> None:
    assert len([c for c in _env_var_cases() if c is not MISSING]) == 228


# -- buildkit-shell: wordsTest --------------------------------------------------


@dataclass(frozen=True, slots=True)
class WordsCase:
    line: int
    source: str
    expected: list[str]
    env: Mapping[str, str]


def _words_cases() -> list[object]:
    path = SHELL_DIR / "wordsTest"
    if not path.is_file():
        return [MISSING]
    env: dict[str, str] = {}
    cases: list[object] = []
    for number, line in enumerate(_read(path).split("\n"), 1):
        if line.startswith("#") or not line:
            continue
        if line.startswith("ENV "):
            name, _, value = line[3:].lstrip(" ").partition("=")
            env[name] = value
            continue
        source, expected = line.split("|")
        case = WordsCase(number, source.strip(), expected.lstrip(" ").split(","), dict(env))
        cases.append(pytest.param(case, id=f"L{number}:{source.strip()}"))
    return cases


@pytest.mark.parametrize("case", _words_cases())
def test_shell_words(case: WordsCase | None) -> None:
    if case is None:
        pytest.fail(f"conformance data missing: {SHELL_DIR / 'wordsTest'}")
    try:
        words = expand_words(case.source, case.env)
    except DockerfileError:
        words = ["error"]
    assert words == case.expected


def test_shell_words_count() -> None:
    assert len([c for c in _words_cases() if c is not MISSING]) == 24

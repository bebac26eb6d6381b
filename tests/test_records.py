"""pybuild.records: dataclass semantics without the import cost, on both __init__ paths."""

from __future__ import annotations

import copy
import pickle
from typing import ClassVar

import pytest

from pybuild import records
from pybuild.records import FrozenInstanceError, asdict, field, fields, record, replace


@record(frozen=True, slots=True, kw_only=True)
class Base:
    """A frozen, slotted, keyword-only base."""

    keyword: ClassVar[str] = ""
    meta: int

    @property
    def doubled(self) -> int:
        return self.meta * 2


@record(frozen=True, slots=True, kw_only=True)
class Child(Base):
    keyword: ClassVar[str] = "CHILD"
    image: str
    stage: str | None = None
    mounts: tuple[str, ...] = field(default_factory=tuple)


@record
class Mutable:
    a: int
    b: str = "b"
    items: list[int] = field(default_factory=list)
    fixed: int = field(init=False, default=7)
    hidden: str = field(default="x", repr=False)

    def __post_init__(self) -> None:
        self.twice = self.a * 2


@record
class Outer:
    inner: Mutable
    many: list[Mutable] = field(default_factory=list)


def _both_paths(make: object) -> list[object]:
    """Instances made before and after the class's __init__ gets compiled."""
    assert callable(make)
    made = [make() for _ in range(records.COMPILE_AFTER + 2)]
    return [made[0], made[-1]]


def test_frozen_slotted_inheritance_on_both_init_paths() -> None:
    for c in _both_paths(lambda: Child(meta=3, image="x")):
        assert isinstance(c, Child)
        assert (c.meta, c.image, c.stage, c.mounts, c.doubled) == (3, "x", None, (), 6)
        assert Child.keyword == "CHILD" and "keyword" not in [f.name for f in fields(c)]
        assert not hasattr(c, "__dict__")
        assert c == Child(meta=3, image="x") and hash(c) == hash(Child(meta=3, image="x"))
        assert repr(c) == "Child(meta=3, image='x', stage=None, mounts=())"
        with pytest.raises(FrozenInstanceError):
            c.image = "y"  # type: ignore[misc]
        assert pickle.loads(pickle.dumps(c)) == c and copy.deepcopy(c) == c


def test_mutable_defaults_factories_init_false_and_post_init() -> None:
    for m in _both_paths(lambda: Mutable(1)):
        assert isinstance(m, Mutable)
        assert (m.a, m.b, m.items, m.fixed, m.twice) == (1, "b", [], 7, 2)
        assert repr(m) == "Mutable(a=1, b='b', items=[], fixed=7)"
        m.a = 5
        assert m.a == 5
        with pytest.raises(TypeError):
            hash(m)
    assert Mutable(1).items is not Mutable(1).items


@pytest.mark.parametrize("call", [
    lambda: Child(1, image="x"),  # type: ignore[misc]
    lambda: Child(meta=1),  # type: ignore[call-arg]
    lambda: Child(meta=1, image="x", other=2),  # type: ignore[call-arg]
    lambda: Mutable(),  # type: ignore[call-arg]
    lambda: Mutable(1, "b", [], "h", 5),  # type: ignore[call-arg]
    lambda: Mutable(1, a=2),  # type: ignore[misc]
    lambda: Mutable(1, fixed=3),  # type: ignore[call-arg]
])
def test_bad_arguments_are_type_errors_on_both_paths(call: object) -> None:
    assert callable(call)
    for _ in range(records.COMPILE_AFTER + 2):
        with pytest.raises(TypeError):
            call()


def test_replace_asdict_fields() -> None:
    m = Mutable(1, "z", [3])
    r = replace(m, b="q")
    assert (r.a, r.b, r.items, r.twice) == (1, "q", [3], 2)
    with pytest.raises(ValueError, match="init=False"):
        replace(m, fixed=1)
    c = replace(Child(meta=1, image="a"), image="b")
    assert c == Child(meta=1, image="b")
    outer = Outer(m, [Mutable(2)])
    assert asdict(outer) == {"inner": {"a": 1, "b": "z", "items": [3], "fixed": 7, "hidden": "x"},
                             "many": [{"a": 2, "b": "b", "items": [], "fixed": 7, "hidden": "x"}]}
    assert [f.name for f in fields(Mutable)] == ["a", "b", "items", "fixed", "hidden"]
    assert records.is_record(m) and not records.is_record(object())
    with pytest.raises(TypeError):
        fields(object())


def test_class_definition_errors() -> None:
    with pytest.raises(TypeError, match="non-default argument"):
        @record
        class Bad:
            a: int = 1
            b: int
    with pytest.raises(ValueError, match="mutable default"):
        @record
        class Shared:
            items: list[int] = []  # noqa: RUF012

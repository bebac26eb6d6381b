"""pybuild.records against the standard library's dataclasses: the same classes, the same behaviour.

Each class shape below is defined twice, once with ``@record(...)`` and once with
``@dataclasses.dataclass(...)``, for every combination of decorator options in PARAMS,
and the same operations run on both: the constructor's signature and the calls it accepts
or refuses (same exception types and messages), field order and options, class
attributes, ``repr``, ``==``, ``hash``, assignment and deletion (frozen or not), slots,
``replace``, ``asdict``, copies and pickling, ``__match_args__``, class-definition errors.
Whatever records does differently on purpose is in the ``test_deliberate_*`` tests at the
end, each saying why.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import operator
import pickle
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import pytest

from pybuild import records


class Impl:
    """One implementation of the dataclass protocol, under common names."""

    def __init__(self, name: str, decorate: Callable[..., Any], field: Callable[..., Any],
                 fields: Callable[[Any], tuple[Any, ...]], replace: Callable[..., Any], asdict: Callable[[Any], Any],
                 is_one: Callable[[Any], bool], frozen_error: type[AttributeError], missing: object) -> None:
        self.name = name
        self.decorate = decorate
        self.field = field
        self.fields = fields
        self.replace = replace
        self.asdict = asdict
        self.is_one = is_one
        self.frozen_error = frozen_error
        self.missing = missing

    def __repr__(self) -> str:
        return self.name


RECORDS = Impl("records", records.record, records.field, records.fields, records.replace, records.asdict,
               records.is_record, records.FrozenInstanceError, records.MISSING)
DATACLASSES = Impl("dataclasses", dataclasses.dataclass, dataclasses.field, dataclasses.fields, dataclasses.replace,
                   dataclasses.asdict, dataclasses.is_dataclass, dataclasses.FrozenInstanceError, dataclasses.MISSING)

# Every combination of the decorator options records supports that matters.
PARAMS: list[dict[str, bool]] = [
    {},
    {"frozen": True},
    {"eq": False},
    {"eq": False, "frozen": True},
    {"repr": False},
    {"slots": True},
    {"frozen": True, "slots": True},
    {"kw_only": True},
    {"frozen": True, "slots": True, "kw_only": True},
]


# The class shapes: each builds its class (and its bases) with one implementation.

def _plain(impl: Impl, params: dict[str, bool]) -> type:
    @impl.decorate(**params)
    class Plain:
        a: int
        b: str = "b"

    return Plain


def _factories(impl: Impl, params: dict[str, bool]) -> type:
    @impl.decorate(**params)
    class Factories:
        a: int
        items: list[int] = impl.field(default_factory=list)
        tags: tuple[str, ...] = ()
        table: dict[str, int] = impl.field(default_factory=dict)

    return Factories


def _options(impl: Impl, params: dict[str, bool]) -> type:
    @impl.decorate(**params)
    class Options:
        a: int
        hidden: str = impl.field(default="h", repr=False)
        ignored: int = impl.field(default=0, compare=False)
        derived: int = impl.field(init=False, default=-1)
        made: list[int] = impl.field(init=False, default_factory=list)
        late: str = impl.field(kw_only=True, default="late")
        required_kw: int = impl.field(kw_only=True)  # no default after defaults: fine when keyword-only

        def __post_init__(self) -> None:
            object.__setattr__(self, "derived", self.a * 2)

    return Options


def _classvars(impl: Impl, params: dict[str, bool]) -> type:
    @impl.decorate(**params)
    class WithClassVars:
        count: ClassVar[int] = 0
        kind: typing.ClassVar[str] = "kind"
        a: int
        b: int = 1

    return WithClassVars


def _inheritance(impl: Impl, params: dict[str, bool]) -> type:
    @impl.decorate(**params)
    class Base:
        a: int
        b: int = 1

        @property
        def doubled(self) -> int:
            return self.a * 2

    @impl.decorate(**params)
    class Child(Base):
        b: int = 2  # redefined: keeps its place, takes the new default
        c: str = "c"

    return Child


def _keyword_base(impl: Impl, params: dict[str, bool]) -> type:
    @impl.decorate(**{**params, "kw_only": True})
    class KeywordBase:
        meta: int
        extra: str = "x"

    @impl.decorate(**params)
    class Positional(KeywordBase):
        image: str  # no default after the base's defaults: fine, the base's are keyword-only
        stage: str | None = None

    return Positional


def _empty(impl: Impl, params: dict[str, bool]) -> type:
    @impl.decorate(**params)
    class Empty:
        pass

    return Empty


def _user_methods(impl: Impl, params: dict[str, bool]) -> type:
    @impl.decorate(**params)
    class UserMethods:
        a: int
        b: int = 0

        def __repr__(self) -> str:
            return f"<UserMethods {self.a}>"

        def __eq__(self, other: object) -> bool:
            return isinstance(other, UserMethods) and self.a == other.a

    return UserMethods


def _explicit_hash(impl: Impl, params: dict[str, bool]) -> type:
    @impl.decorate(**params)
    class ExplicitHash:
        a: int

        def __hash__(self) -> int:
            return 42

    return ExplicitHash


_Call = tuple[tuple[Any, ...], dict[str, Any]]
_AB_CALLS: list[_Call] = [((), {}), ((1,), {}), ((1, "x"), {}), ((1, "x", "extra"), {}), ((), {"a": 1}),
                          ((), {"a": 1, "b": "y"}), ((1,), {"a": 2}), ((), {"b": "y"}), ((1,), {"c": 3})]
SHAPES: dict[str, tuple[Callable[[Impl, dict[str, bool]], type], list[_Call], tuple[str, ...]]] = {
    "plain": (_plain, _AB_CALLS, ()),
    "factories": (_factories, [((), {}), ((1,), {}), ((1, [2]), {}), ((1, [2], ("t",), {"k": 1}), {}),
                               ((), {"a": 1, "table": {"k": 2}}), ((1, [], (), {}, 5), {})], ()),
    "options": (_options, [((1,), {}), ((1,), {"required_kw": 2}), ((1, "H", 5), {"required_kw": 2, "late": "l"}),
                           ((), {"a": 1, "required_kw": 2, "derived": 3}), ((1, "H", 5, 6), {"required_kw": 2}),
                           ((), {"a": 1, "required_kw": 2, "made": []})], ()),
    "classvars": (_classvars, [((), {}), ((1,), {}), ((1, 2), {}), ((), {"a": 1, "count": 2})], ("count", "kind")),
    "inheritance": (_inheritance, [((), {}), ((1,), {}), ((1, 5, "z"), {}), ((1,), {"c": "q"}),
                                   ((1, 2, "c", 4), {})], ("doubled",)),
    "keyword_base": (_keyword_base, [((), {}), (("img",), {}), (("img",), {"meta": 1}),
                                     ((), {"image": "img", "meta": 1, "extra": "e", "stage": "s"}),
                                     ((1, "img"), {})], ()),
    "empty": (_empty, [((), {}), ((1,), {}), ((), {"a": 1})], ()),
    "user_methods": (_user_methods, [((1,), {}), ((1, 2), {}), ((), {})], ()),
    "explicit_hash": (_explicit_hash, [((1,), {}), ((), {})], ()),
}


def _raised(impl: Impl, error: BaseException) -> tuple[str, object, str]:
    """An exception as both implementations should raise it: the same type (their FrozenInstanceErrors are
    two classes of one name, both AttributeErrors) and the same message, but for the noun ("record")."""
    message = str(error).replace("dataclass", "record")
    if type(error) is impl.frozen_error:
        assert isinstance(error, AttributeError)
        return ("raised", "FrozenInstanceError", message)
    return ("raised", type(error), message)


def _outcome(impl: Impl, function: Callable[..., object], /, *args: Any, **kwargs: Any) -> object:
    """``("ok", function(*args, **kwargs))``, or what it raised."""
    try:
        return ("ok", function(*args, **kwargs))
    except Exception as error:
        return _raised(impl, error)


def _default(impl: Impl, value: object) -> object:
    return "MISSING" if value is impl.missing else value


def _class_attribute(cls: type, name: str) -> object:
    value = getattr(cls, name, "<absent>")
    return f"<{type(value).__name__}>" if inspect.ismemberdescriptor(value) or isinstance(value, property) else value


def _snapshot(impl: Impl, obj: Any, names: tuple[str, ...]) -> dict[str, object]:
    """What can be seen of an instance, in terms that compare across implementations."""
    shown = repr(obj)
    return {
        "repr": "object.__repr__" if " object at 0x" in shown else shown,
        "values": {name: _outcome(impl, getattr, obj, name) for name in names},
        "__dict__": dict(obj.__dict__) if hasattr(obj, "__dict__") else None,
    }


def _hash(obj: object) -> object:
    value = hash(obj)
    return "identity" if value == object.__hash__(obj) else value


def _same_hash(x: object, y: object) -> bool:
    return hash(x) == hash(y)


def _replaced(impl: Impl, obj: Any, names: tuple[str, ...], **changes: Any) -> object:
    return _snapshot(impl, impl.replace(obj, **changes), names)


def _replace_init_false(impl: Impl, obj: Any) -> object:
    return [impl.replace(obj, **{f.name: 1}) for f in impl.fields(obj) if not f.init]


def _copied(impl: Impl, obj: Any, names: tuple[str, ...], deep: bool) -> object:
    return _snapshot(impl, copy.deepcopy(obj) if deep else copy.copy(obj), names)


def _equal_but_for(impl: Impl, obj: Any, name: str) -> tuple[bool, bool]:
    """Whether ``obj`` equals (and hashes as) a copy of it with another value in field ``name``."""
    changed = impl.replace(obj, **{name: 12345})
    return obj == changed, _outcome(impl, _same_hash, obj, changed) == ("ok", True)


def _deepcopy_equal(obj: object) -> bool:
    return copy.deepcopy(obj) == obj


def _observe(impl: Impl, cls: type, calls: list[_Call], extra: tuple[str, ...]) -> dict[str, object]:
    seen: dict[str, object] = {}
    # The class, before any instance exists (the signature needs __init__ itself).
    seen["signature"] = str(inspect.signature(cls))
    seen["match_args"] = getattr(cls, "__match_args__", None)
    seen["fields"] = [(f.name, f.type, _default(impl, f.default), _default(impl, f.default_factory), f.init, f.repr,
                       f.compare, f.kw_only) for f in impl.fields(cls)]
    names = tuple(f.name for f in impl.fields(cls)) + extra
    seen["class attributes"] = {name: _class_attribute(cls, name) for name in names}
    seen["__slots__"] = cls.__dict__.get("__slots__")
    seen["__hash__ is None"] = cls.__hash__ is None
    seen["is one"] = (impl.is_one(cls), impl.is_one(object()))
    made: list[tuple[Any, Any]] = []
    for index, (args, kwargs) in enumerate(calls):
        outcome = _outcome(impl, cls, *args, **kwargs)
        if isinstance(outcome, tuple) and outcome[0] == "ok":
            made.append((outcome[1], cls(*args, **kwargs)))
            outcome = ("ok", _snapshot(impl, outcome[1], names))
        seen[f"call {index}: {args!r} {kwargs!r}"] = outcome
    for index, (x, same) in enumerate(made):
        other = made[(index + 1) % len(made)][0]
        first = {f.name: 99 for f in impl.fields(x)[:1]}
        seen[f"instance {index}"] = {
            "==": (x == same, x == other, x != same, x == object(), x == x),
            "<": _outcome(impl, operator.lt, x, other),
            "hash": _outcome(impl, _hash, x),
            "hash equal": _outcome(impl, _same_hash, x, same),
            "replace()": _outcome(impl, _replaced, impl, x, names),
            "replace(first)": _outcome(impl, _replaced, impl, x, names, **first),
            "replace(unknown)": _outcome(impl, impl.replace, x, unknown=1),
            "replace(init=False)": _outcome(impl, _replace_init_false, impl, x),
            "asdict": _outcome(impl, impl.asdict, x),
            "copy": _outcome(impl, _copied, impl, x, names, False),
            "deepcopy": _outcome(impl, _copied, impl, x, names, True),
            "deepcopy ==": _outcome(impl, _deepcopy_equal, x),
            "== with another value in each field": [_outcome(impl, _equal_but_for, impl, x, f.name)
                                                    for f in impl.fields(x) if f.init],
        }
        for name in [f.name for f in impl.fields(x)] + ["not_a_field"]:
            target = copy.copy(x)
            seen[f"instance {index}: set {name}"] = _outcome(impl, setattr, target, name, 7)
            seen[f"instance {index}: after set {name}"] = _snapshot(impl, target, names)
            seen[f"instance {index}: del {name}"] = _outcome(impl, delattr, target, name)
    seen["replace(class)"] = _outcome(impl, impl.replace, cls)
    seen["asdict(class)"] = _outcome(impl, impl.asdict, cls)
    return seen


def _params_id(params: dict[str, bool]) -> str:
    return ",".join(f"{key}={value}" for key, value in params.items()) or "defaults"


@pytest.mark.parametrize("params", PARAMS, ids=_params_id)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_same_behaviour_as_dataclasses(shape: str, params: dict[str, bool]) -> None:
    define, calls, extra = SHAPES[shape]
    ours = _observe(RECORDS, define(RECORDS, params), calls, extra)
    theirs = _observe(DATACLASSES, define(DATACLASSES, params), calls, extra)
    if params.get("frozen") and params.get("slots"):
        # Setting a name that is not a field: dataclasses' frozen __setattr__ of a slotted class fails
        # with a TypeError from super() (see test_deliberate_frozen_slotted_non_field_names).
        for key in [key for key in ours if key.endswith((": set not_a_field", ": del not_a_field"))]:
            assert ours.pop(key)[:2] == ("raised", "FrozenInstanceError")  # type: ignore[index]
            assert theirs.pop(key)[:2] in {("raised", TypeError), ("raised", "FrozenInstanceError")}  # type: ignore[index]
    assert ours == theirs


@pytest.mark.parametrize("params", PARAMS, ids=_params_id)
def test_plain_subclass_of_a_record(params: dict[str, bool]) -> None:
    """A class that inherits from a record without being one, instantiated before the record itself."""

    def observe(impl: Impl) -> object:
        base = _plain(impl, params)

        class Sub(base):  # type: ignore[valid-type,misc]
            pass

        first = _outcome(impl, Sub, 1, "s")  # before any instance of the record itself
        if isinstance(first, tuple) and first[0] == "ok":
            first = ("ok", _snapshot(impl, first[1], ("a", "b")))
        sub, parent = Sub(a=1, b="s"), base(a=1, b="s")
        return [first, _snapshot(impl, sub, ("a", "b")),
                sub == parent, parent == sub, _outcome(impl, _replaced, impl, sub, ("a", "b"), b="r"),
                str(inspect.signature(Sub))]

    assert observe(RECORDS) == observe(DATACLASSES)


def test_nested_records_in_asdict_and_repr() -> None:
    class Pair(NamedTuple):
        left: Any
        right: Any

    def observe(impl: Impl) -> object:
        @impl.decorate(frozen=True)
        class Inner:
            n: int
            tags: tuple[str, ...] = ()

        @impl.decorate
        class Outer:
            inner: Inner
            many: list[Inner] = impl.field(default_factory=list)
            by_name: dict[str, Inner] = impl.field(default_factory=dict)
            pair: Pair | None = None
            plain: tuple[int, ...] = (1, 2)

        inner: Any = Inner
        outer_class: Any = Outer
        outer: Any = outer_class(inner(1), [inner(2, ("t",))], {"k": inner(3)}, Pair(inner(4), [inner(5)]))
        as_dict = impl.asdict(outer)
        recursive: Any = outer_class(inner(0))
        recursive.many.append(recursive)  # a record that contains itself
        return (as_dict, type(as_dict["pair"]), as_dict["many"] is outer.many, repr(outer), repr(recursive),
                impl.asdict(inner(6)))

    assert observe(RECORDS) == observe(DATACLASSES)


# Class definitions both refuse, with the same exception type (the wording may differ).

def _non_default_after_default(impl: Impl) -> None:
    @impl.decorate
    class Bad:
        a: int = 1
        b: int


def _mutable_default(value: object) -> Callable[[Impl], None]:
    def define(impl: Impl) -> None:
        @impl.decorate
        class Shared:
            items: object = value

    return define


def _mutable_field_default(impl: Impl) -> None:
    @impl.decorate
    class Shared:
        items: list[int] = impl.field(default=[])


def _field_without_annotation(impl: Impl) -> None:
    @impl.decorate
    class Unannotated:
        a: int
        b = impl.field(default=1)


def _default_and_factory(impl: Impl) -> None:
    @impl.decorate
    class Both:
        a: list[int] = impl.field(default=(), default_factory=list)


def _frozen_from_mutable(impl: Impl) -> None:
    @impl.decorate
    class Mutable:
        a: int

    @impl.decorate(frozen=True)
    class Frozen(Mutable):
        b: int


def _mutable_from_frozen(impl: Impl) -> None:
    @impl.decorate(frozen=True)
    class Frozen:
        a: int

    @impl.decorate
    class Mutable(Frozen):
        b: int


def _slots_twice(impl: Impl) -> None:
    @impl.decorate(slots=True)
    class Slotted:
        __slots__ = ("a",)
        a: int


def _frozen_with_setattr(impl: Impl) -> None:
    @impl.decorate(frozen=True)
    class Frozen:
        a: int

        def __setattr__(self, name: str, value: object) -> None:
            pass


DEFINITION_ERRORS: dict[str, Callable[[Impl], None]] = {
    "non-default after default": _non_default_after_default,
    "mutable default list": _mutable_default([]),
    "mutable default dict": _mutable_default({}),
    "mutable default set": _mutable_default(set()),
    "mutable default bytearray": _mutable_default(bytearray()),
    "mutable default in field()": _mutable_field_default,
    "field without annotation": _field_without_annotation,
    "default and default_factory": _default_and_factory,
    "frozen from non-frozen": _frozen_from_mutable,
    "non-frozen from frozen": _mutable_from_frozen,
    "slots with __slots__": _slots_twice,
    "frozen with __setattr__": _frozen_with_setattr,
}


@pytest.mark.parametrize("define", list(DEFINITION_ERRORS.values()), ids=list(DEFINITION_ERRORS))
def test_same_class_definition_errors(define: Callable[[Impl], None]) -> None:
    with pytest.raises(Exception) as ours:  # noqa: B017, PT011 - the type is compared just below
        define(RECORDS)
    with pytest.raises(Exception) as theirs:  # noqa: B017, PT011
        define(DATACLASSES)
    assert type(ours.value) is type(theirs.value)


# Pickling needs classes importable by name.

@records.record(frozen=True, slots=True, kw_only=True)
class PickledFrozen:
    meta: int
    image: str = "img"
    mounts: tuple[str, ...] = records.field(default_factory=tuple)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DataclassPickledFrozen:
    meta: int
    image: str = "img"
    mounts: tuple[str, ...] = dataclasses.field(default_factory=tuple)


@records.record
class PickledMutable:
    a: int
    items: list[int] = records.field(default_factory=list)
    derived: int = records.field(init=False, default=0)


@dataclasses.dataclass
class DataclassPickledMutable:
    a: int
    items: list[int] = dataclasses.field(default_factory=list)
    derived: int = dataclasses.field(init=False, default=0)


@pytest.mark.parametrize(("ours", "theirs"), [(PickledFrozen(meta=1, mounts=("m",)),
                                               DataclassPickledFrozen(meta=1, mounts=("m",))),
                                              (PickledMutable(1, [2]), DataclassPickledMutable(1, [2]))])
def test_pickle_round_trip(ours: Any, theirs: Any) -> None:
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back, their_back = pickle.loads(pickle.dumps(ours, protocol)), pickle.loads(pickle.dumps(theirs, protocol))
        assert back == ours and their_back == theirs
        assert repr(back).replace("Dataclass", "") == repr(their_back).replace("Dataclass", "")


def test_init_is_compiled_on_first_use() -> None:
    """A class that is never instantiated costs no exec; the first instance, or a look at ``__init__``,
    compiles it, and from then on the class's ``__init__`` is a plain function."""

    @records.record
    class Lazy:
        a: int

    assert not inspect.isfunction(Lazy.__dict__["__init__"])
    assert Lazy(1).a == 1
    assert inspect.isfunction(Lazy.__dict__["__init__"])
    assert Lazy.__init__.__qualname__.endswith("Lazy.__init__")

    @records.record(frozen=True, slots=True)
    class Looked:
        a: int

    assert inspect.isfunction(Looked.__init__) and inspect.isfunction(Looked.__dict__["__init__"])
    assert Looked(2).a == 2


def test_annotations_of_a_module_without_the_future_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """From Python 3.14 (PEP 649/749) a class of a module without ``from __future__ import annotations``
    has an ``__annotate__`` function and no ``__annotations__`` dict; records then asks annotationlib, as
    dataclasses does. Simulated here: this Python's classes always have the dict."""
    asked: list[object] = []

    def get_annotations(cls: type, *, format: object) -> dict[str, object]:  # noqa: A002
        asked.append(format)
        return dict(cls.__annotate__(1))  # type: ignore[attr-defined]

    annotationlib = types.ModuleType("annotationlib")
    annotationlib.get_annotations = get_annotations  # type: ignore[attr-defined]
    annotationlib.Format = types.SimpleNamespace(FORWARDREF="FORWARDREF")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "annotationlib", annotationlib)
    monkeypatch.setattr(records, "sys", types.SimpleNamespace(version_info=(3, 14), modules=sys.modules))
    namespace = {"__annotate__": lambda format: {"a": int, "kind": ClassVar[str], "b": str}, "b": "b"}
    deferred: Any = records.record(type("Deferred", (), namespace))
    assert asked == ["FORWARDREF"]
    assert [f.name for f in records.fields(deferred)] == ["a", "b"]
    assert repr(deferred(1)) == "Deferred(a=1, b='b')"
    records.record(type("Plain", (), {"__annotations__": {"a": "int"}}))
    records.record(type("Bare", (), {}))
    assert asked == ["FORWARDREF"]  # a plain __annotations__ dict, or none at all: annotationlib not asked


# Where records deliberately differs from dataclasses (README lists these too).

def test_deliberate_own_frozen_instance_error() -> None:
    """records raises its own FrozenInstanceError (an AttributeError, as dataclasses' is): importing
    dataclasses to reuse theirs is the import cost records exists to avoid."""

    @records.record(frozen=True)
    class Frozen:
        a: int

    with pytest.raises(records.FrozenInstanceError) as raised:
        Frozen(1).a = 2  # type: ignore[misc]
    assert isinstance(raised.value, AttributeError)
    assert not isinstance(raised.value, dataclasses.FrozenInstanceError)


def test_deliberate_not_a_dataclass_and_no_generated_doc() -> None:
    """A record is not a dataclass to dataclasses' own functions (no __dataclass_fields__), and gets no
    ``__doc__`` made from its signature (dataclasses computes it with inspect, which records never imports)."""

    @records.record
    class NoDoc:
        a: int

    @dataclasses.dataclass
    class WithDoc:
        a: int

    assert not dataclasses.is_dataclass(NoDoc)
    with pytest.raises(TypeError):
        dataclasses.fields(NoDoc)
    assert NoDoc.__doc__ is None and WithDoc.__doc__ == "WithDoc(a: 'int')"


def test_deliberate_unsupported_options() -> None:
    """Options pybuild does not use are refused rather than half-supported: order, unsafe_hash, init,
    match_args, weakref_slot on the decorator; hash and metadata on field(); no InitVar, KW_ONLY, astuple
    or make_dataclass."""
    for option in ("order", "unsafe_hash", "init", "match_args", "weakref_slot"):
        with pytest.raises(TypeError):
            records.record(**{option: True})
    make_field: Any = records.field
    for option in ("hash", "metadata"):
        with pytest.raises(TypeError):
            make_field(**{option: None})
    for name in ("InitVar", "KW_ONLY", "astuple", "make_dataclass"):
        assert not hasattr(records, name)


def test_deliberate_asdict_does_not_deep_copy() -> None:
    """asdict() rebuilds records, lists, tuples and dicts, but hands other values over as they are;
    dataclasses.asdict() deep-copies them. No dict_factory either."""

    @records.record
    class Ours:
        tags: set[str] = records.field(default_factory=set)

    @dataclasses.dataclass
    class Theirs:
        tags: set[str] = dataclasses.field(default_factory=set)

    ours, theirs = Ours({"a"}), Theirs({"a"})
    assert records.asdict(ours) == dataclasses.asdict(theirs) == {"tags": {"a"}}
    assert records.asdict(ours)["tags"] is ours.tags
    assert dataclasses.asdict(theirs)["tags"] is not theirs.tags
    with pytest.raises(TypeError):
        records.asdict(ours, dict_factory=dict)  # type: ignore[call-arg]


def test_deliberate_classvar_by_spelling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``from __future__ import annotations`` a ``ClassVar[...]`` annotation is a string. dataclasses
    resolves its name in the module and so takes it for a field where ``ClassVar`` is imported only under
    TYPE_CHECKING, as pybuild's modules do (typing costs import time); records goes by the spelling."""
    module = types.ModuleType("records_classvar_probe")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(  # noqa: S102
        "from __future__ import annotations\n"
        "import dataclasses\n"
        "from pybuild import records\n"
        "TYPE_CHECKING = False\n"
        "if TYPE_CHECKING:\n"
        "    from typing import ClassVar\n"
        "@records.record\n"
        "class Ours:\n"
        "    kind: ClassVar[str] = 'k'\n"
        "    a: int = 0\n"
        "@dataclasses.dataclass\n"
        "class Theirs:\n"
        "    kind: ClassVar[str] = 'k'\n"
        "    a: int = 0\n", module.__dict__)
    assert [f.name for f in records.fields(module.Ours)] == ["a"]
    assert [f.name for f in dataclasses.fields(module.Theirs)] == ["kind", "a"]


def test_deliberate_unset_fields() -> None:
    """A field with init=False and no default is left unset by both. records' repr shows it as MISSING
    (a repr that never raises), and a frozen slotted record with one still pickles; dataclasses raises
    AttributeError in both cases."""

    @records.record(frozen=True, slots=True)
    class Ours:
        a: int
        unset: int = records.field(init=False)

    @dataclasses.dataclass(frozen=True, slots=True)
    class Theirs:
        a: int
        unset: int = dataclasses.field(init=False)

    ours, theirs = Ours(1), Theirs(1)
    with pytest.raises(AttributeError):
        ours.unset  # noqa: B018
    with pytest.raises(AttributeError):
        theirs.unset  # noqa: B018
    assert repr(ours).endswith("Ours(a=1, unset=MISSING)")
    with pytest.raises(AttributeError):
        repr(theirs)
    assert repr(copy.deepcopy(ours)).endswith("Ours(a=1, unset=MISSING)")
    if sys.version_info < (3, 13):
        with pytest.raises(AttributeError):
            copy.deepcopy(theirs)


def test_deliberate_frozen_means_frozen_in_plain_subclasses() -> None:
    """A plain (non-record) subclass of a frozen record cannot set attributes of its own either;
    dataclasses lets it set names that are not fields."""

    @records.record(frozen=True)
    class Ours:
        a: int

    @dataclasses.dataclass(frozen=True)
    class Theirs:
        a: int

    class OurSub(Ours):
        pass

    class TheirSub(Theirs):
        pass

    with pytest.raises(records.FrozenInstanceError):
        OurSub(1).extra = 1  # type: ignore[attr-defined]
    their_sub = TheirSub(1)
    their_sub.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        their_sub.a = 2  # type: ignore[misc]


def test_deliberate_frozen_slotted_non_field_names() -> None:
    """Setting or deleting a name that is not a field on a frozen slotted record raises FrozenInstanceError;
    dataclasses' __setattr__ there (3.11 to 3.13 at least) calls super() with the class it had before it
    made the slotted copy, and fails with TypeError."""

    @records.record(frozen=True, slots=True)
    class Ours:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Theirs:
        a: int

    with pytest.raises(records.FrozenInstanceError):
        Ours(1).other = 1  # type: ignore[attr-defined]
    with pytest.raises((TypeError, dataclasses.FrozenInstanceError)):
        Theirs(1).other = 1  # type: ignore[attr-defined]


def test_deliberate_eq_compares_tuples() -> None:
    """``==`` compares the tuples of fields, as dataclasses did up to Python 3.12, on every version; from
    3.13 dataclasses compares field by field, so a field holding one NaN object no longer equals itself."""
    nan = float("nan")

    @records.record
    class Ours:
        x: float

    @dataclasses.dataclass
    class Theirs:
        x: float

    assert Ours(nan) == Ours(nan)
    assert (Theirs(nan) == Theirs(nan)) is (sys.version_info < (3, 13))


def test_deliberate_definition_error_wording() -> None:
    """The class-definition errors are of dataclasses' types; their wording says "record" and names the class."""
    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument in .*Bad"):
        _non_default_after_default(RECORDS)
    with pytest.raises(TypeError, match="cannot inherit frozen record from a non-frozen one"):
        _frozen_from_mutable(RECORDS)

"""Records: the data model's classes, with dataclass semantics and no import cost.

``@record`` is a drop-in for the subset of :func:`dataclasses.dataclass` that
pybuild uses (``frozen``, ``kw_only``, ``slots``, ``eq``, ``repr``; fields
with a default, a ``default_factory``, ``init=False``, ``repr=False``,
``compare=False``, ``kw_only``; ``__post_init__``; ``ClassVar`` annotations
left alone; inheritance; ``__match_args__``), plus :func:`field`,
:func:`fields`, :func:`replace` and :func:`asdict`. Type checkers see it as a
dataclass (PEP 681 ``dataclass_transform``). ``tests/test_records.py`` checks
it against :mod:`dataclasses` and lists where it deliberately differs.

Why not the standard library's: every ``pybuild`` command pays for the data
model before it does anything, and on the machines pybuild runs on,
``import dataclasses`` costs ~23 ms (it imports ``inspect``, which imports
``ast``, ``dis`` and ``tokenize``) and each ``@dataclass`` execs generated
source for four or five methods, ~0.5-1 ms a class. For ``pybuild run`` that
was more than bare ``runc run`` needs to start a container. Here a class
costs a few microseconds when it is defined: ``__repr__``, ``__eq__`` and
``__hash__`` are shared generic functions, and ``__init__`` is generated (one
``exec``, ~0.1 ms) when the class is first instantiated, so the many classes
a command imports but never instantiates cost nothing more.

Fields are read from the class's own ``__annotations__``, which is a plain
dict only where the module has ``from __future__ import annotations`` (ruff's
I002 requires it of every module here). Without it, from Python 3.14 on
(PEP 649/749) the class holds an ``__annotate__`` function instead, and
:mod:`annotationlib` is imported to evaluate it, as :mod:`dataclasses` does.
"""

from __future__ import annotations

import sys
from _thread import get_ident

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, dataclass_transform, overload

    _T = TypeVar("_T")
else:
    def dataclass_transform(**_kwargs: object):  # noqa: ANN202 - a no-op outside type checking
        return lambda function: function

    def overload(function):  # noqa: ANN001, ANN202
        return function

__all__ = ["FrozenInstanceError", "Field", "asdict", "field", "fields", "is_record", "record", "replace"]


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen record."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


class _HasDefaultFactory:
    def __repr__(self) -> str:
        return "<factory>"


MISSING: Any = _Missing()
_HAS_DEFAULT_FACTORY: Any = _HasDefaultFactory()  # the default a factory field shows in __init__'s signature
_FIELDS = "__record_fields__"
_PARAMS = "__record_params__"


class Field:
    """One field of a record: its name, annotation, default (or factory) and whether it is in
    ``__init__``/``repr``/``==``."""

    __slots__ = ("name", "type", "default", "default_factory", "init", "repr", "compare", "kw_only")

    def __init__(self, default: Any = MISSING, default_factory: Any = MISSING, init: bool = True,
                 repr: bool = True, compare: bool = True, kw_only: bool | None = None) -> None:  # noqa: A002
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name = ""
        self.type: Any = None
        self.default = default
        self.default_factory = default_factory
        self.init = init
        self.repr = repr
        self.compare = compare
        self.kw_only = kw_only

    def __repr__(self) -> str:
        return (f"Field(name={self.name!r}, type={self.type!r}, default={self.default!r}, "
                f"default_factory={self.default_factory!r}, init={self.init!r}, repr={self.repr!r}, "
                f"compare={self.compare!r}, kw_only={self.kw_only!r})")

    @property
    def has_default(self) -> bool:
        return self.default is not MISSING or self.default_factory is not MISSING


@overload
def field(*, default: _T, init: bool = ..., repr: bool = ..., compare: bool = ...,  # noqa: A002
          kw_only: bool = ...) -> _T: ...
@overload
def field(*, default_factory: Callable[[], _T], init: bool = ..., repr: bool = ...,  # noqa: A002, F811
          compare: bool = ..., kw_only: bool = ...) -> _T: ...
@overload
def field(*, init: bool = ..., repr: bool = ..., compare: bool = ..., kw_only: bool = ...) -> Any: ...  # noqa: A002, F811
def field(*, default: Any = MISSING, default_factory: Any = MISSING, init: bool = True, repr: bool = True,  # noqa: A002, F811
          compare: bool = True, kw_only: bool | None = None) -> Any:
    """Describe a field whose default is computed, or which stays out of ``__init__``, ``repr`` or ``==``."""
    return Field(default, default_factory, init, repr, compare, kw_only)


def _own_annotations(cls: type) -> dict[str, Any]:
    """``cls``'s own annotations (not its bases'), unevaluated where the module defers them."""
    namespace = cls.__dict__
    annotations = namespace.get("__annotations__")
    if (annotations is None and sys.version_info >= (3, 14)
            and ("__annotate_func__" in namespace or "__annotate__" in namespace)):
        # PEP 649/749 without `from __future__ import annotations`: only an __annotate__ function.
        import annotationlib

        annotations = annotationlib.get_annotations(cls, format=annotationlib.Format.FORWARDREF)
    return annotations or {}


def _is_classvar(annotation: object) -> bool:
    """Whether an annotation is ``ClassVar`` or ``ClassVar[...]``: by its spelling when it is a string
    (typing is imported only under TYPE_CHECKING here, so the name is not resolved), else by identity."""
    if not isinstance(annotation, str):
        forward = getattr(annotation, "__forward_arg__", None)  # an annotationlib/typing ForwardRef
        if isinstance(forward, str):
            annotation = forward
        else:
            typing = sys.modules.get("typing")  # a typing object was made by an imported typing
            return typing is not None and (annotation is typing.ClassVar
                                           or getattr(annotation, "__origin__", None) is typing.ClassVar)
    assert isinstance(annotation, str)
    text = annotation.strip()
    if text.startswith("typing."):
        text = text[7:]
    return text == "ClassVar" or text.startswith("ClassVar[")


def _collect(cls: type, kw_only: bool, frozen: bool) -> dict[str, Field]:
    collected: dict[str, Field] = {}
    record_bases = False
    any_frozen_base = False
    all_frozen_bases = True
    for base in reversed(cls.__mro__[1:]):
        base_fields = getattr(base, _FIELDS, None)
        if base_fields is not None:
            record_bases = True
            collected.update(base_fields)
            base_frozen = getattr(base, _PARAMS)["frozen"]
            any_frozen_base = any_frozen_base or base_frozen
            all_frozen_bases = all_frozen_bases and base_frozen
    if record_bases:
        if any_frozen_base and not frozen:
            raise TypeError("cannot inherit non-frozen record from a frozen one")
        if frozen and not all_frozen_bases:
            raise TypeError("cannot inherit frozen record from a non-frozen one")
    annotations = _own_annotations(cls)
    for name, value in cls.__dict__.items():
        if isinstance(value, Field) and name not in annotations:
            raise TypeError(f"{name!r} is a field but has no type annotation")
    for name, annotation in annotations.items():
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, MISSING)
        f = value if isinstance(value, Field) else Field(default=value)
        if f.default is not MISSING and type(f.default).__hash__ is None:  # as dataclasses: unhashable = mutable
            raise ValueError(f"mutable default {type(f.default)} for field {name} is not allowed: "
                             "use default_factory")
        f.name = name
        f.type = annotation
        if f.kw_only is None:
            f.kw_only = kw_only
        collected[name] = f
        # Class attributes hold plain defaults (as with dataclasses); Field markers go.
        if isinstance(value, Field):
            if f.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
    seen_default = False
    for f in collected.values():
        if not f.init or f.kw_only:
            continue
        if f.has_default:
            seen_default = True
        elif seen_default:
            raise TypeError(f"non-default argument {f.name!r} follows default argument in {cls.__qualname__}")
    return collected


def _compile_init(cls: type, record_fields: dict[str, Field], frozen: bool) -> Callable[..., None]:
    """``cls.__init__``: generated source, one ``exec``."""
    namespace: dict[str, Any] = {"__name__": cls.__module__, "__record_setattr__": object.__setattr__,
                                 "__record_factory__": _HAS_DEFAULT_FACTORY}
    self_name = "__record_self__" if "self" in record_fields else "self"
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    annotations: dict[str, Any] = {}
    for f in record_fields.values():
        value = f.name
        if f.default_factory is not MISSING:
            namespace[f"__record_make_{f.name}__"] = f.default_factory
            if f.init:
                default = "=__record_factory__"
                body.append(f"    if {f.name} is __record_factory__: {f.name} = __record_make_{f.name}__()")
            else:
                value = f"__record_make_{f.name}__()"
        elif f.default is not MISSING:
            namespace[f"__record_dflt_{f.name}__"] = f.default
            default = f"=__record_dflt_{f.name}__"
            if not f.init:
                value = f"__record_dflt_{f.name}__"
        else:
            default = ""
        if f.init:
            (keyword if f.kw_only else positional).append(f.name + default)
            annotations[f.name] = f.type
        elif not f.has_default:
            continue  # init=False without a default: left unset, as dataclasses does
        if frozen:
            body.append(f"    __record_setattr__({self_name}, {f.name!r}, {value})")
        else:
            body.append(f"    {self_name}.{f.name} = {value}")
    if hasattr(cls, "__post_init__"):
        body.append(f"    {self_name}.__post_init__()")
    params = [self_name, *positional]
    if keyword:
        params += ["*", *keyword]
    source = f"def __init__({', '.join(params)}):\n" + ("\n".join(body) or "    pass") + "\n"
    exec(source, namespace)  # noqa: S102 - generated from field names only
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    annotations["return"] = None
    init.__annotations__ = annotations
    return init


class _InitOnFirstUse:
    """A record's ``__init__`` until it is first looked up (to make an instance, or ``Cls.__init__``):
    then the real one is compiled and replaces this on the class."""

    __slots__ = ("owner", "record_fields", "frozen")

    def __init__(self, owner: type, record_fields: dict[str, Field], frozen: bool) -> None:
        self.owner = owner
        self.record_fields = record_fields
        self.frozen = frozen

    def __get__(self, instance: object, klass: type | None = None) -> Any:
        init = _compile_init(self.owner, self.record_fields, self.frozen)
        self.owner.__init__ = init  # type: ignore[misc]
        return init if instance is None else init.__get__(instance, klass)


_repr_running: set[tuple[int, int]] = set()


def _repr(self: Any) -> str:
    key = (id(self), get_ident())
    if key in _repr_running:  # a record that contains itself, as reprlib.recursive_repr does
        return "..."
    _repr_running.add(key)
    try:
        parts = ", ".join(f"{f.name}={getattr(self, f.name, MISSING)!r}"
                          for f in getattr(self, _FIELDS).values() if f.repr)
    finally:
        _repr_running.discard(key)
    return f"{type(self).__qualname__}({parts})"


def _key(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, f.name) for f in getattr(self, _FIELDS).values() if f.compare)


def _eq(self: Any, other: object) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _key(self) == _key(other)


def _hash(self: Any) -> int:
    return hash(_key(self))


def _frozen_setattr(self: Any, name: str, value: object) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _replace(self: Any, /, **changes: Any) -> Any:
    """``copy.replace(record, ...)`` (Python 3.13+): :func:`replace`."""
    return replace(self, **changes)


def _getstate(self: Any) -> list[Any]:
    return [getattr(self, f.name, MISSING) for f in getattr(self, _FIELDS).values()]


def _setstate(self: Any, state: list[Any]) -> None:
    for f, value in zip(getattr(self, _FIELDS).values(), state, strict=True):
        if value is not MISSING:
            object.__setattr__(self, f.name, value)


def _slot_names(klass: type) -> tuple[str, ...]:
    slots = klass.__dict__.get("__slots__", ())
    return (slots,) if isinstance(slots, str) else tuple(slots)


def _with_slots(cls: type, record_fields: dict[str, Field]) -> type:
    """A copy of ``cls`` whose instances keep their fields in ``__slots__`` (no ``__dict__``)."""
    if "__slots__" in cls.__dict__:
        raise TypeError(f"{cls.__name__} already specifies __slots__")
    inherited = {name for base in cls.__mro__[1:] for name in _slot_names(base)}
    namespace = dict(cls.__dict__)
    for name in record_fields:
        namespace.pop(name, None)  # a default stays in the Field: a class attribute would hide the slot
    own = tuple(name for name in record_fields if name not in inherited)
    namespace.pop("__dict__", None)
    namespace.pop("__weakref__", None)
    namespace["__slots__"] = own
    namespace.setdefault("__getstate__", _getstate)
    namespace.setdefault("__setstate__", _setstate)
    slotted = type(cls)(cls.__name__, cls.__bases__, namespace)
    slotted.__qualname__ = cls.__qualname__
    return slotted


def _process(cls: type, frozen: bool, kw_only: bool, slots: bool, eq: bool, repr: bool) -> type:  # noqa: A002
    own = cls.__dict__
    # What dataclasses calls an explicit __hash__: one in the class body (Python puts `__hash__ = None`
    # there itself when the body defines __eq__ alone; that one does not count).
    class_hash = own.get("__hash__", MISSING)
    explicit_hash = not (class_hash is MISSING or (class_hash is None and "__eq__" in own))
    record_fields = _collect(cls, kw_only, frozen)
    setattr(cls, _FIELDS, record_fields)
    setattr(cls, _PARAMS, {"frozen": frozen})
    if repr and "__repr__" not in own:
        cls.__repr__ = _repr  # type: ignore[method-assign,assignment]
    if eq and "__eq__" not in own:
        cls.__eq__ = _eq  # type: ignore[method-assign,assignment]
    if eq and not explicit_hash:
        cls.__hash__ = _hash if frozen else None  # type: ignore[method-assign,assignment]
    if frozen:
        for name in ("__setattr__", "__delattr__"):
            if name in own:
                raise TypeError(f"cannot overwrite attribute {name} in class {cls.__name__}")
        cls.__setattr__ = _frozen_setattr  # type: ignore[method-assign,assignment]
        cls.__delattr__ = _frozen_delattr  # type: ignore[method-assign,assignment]
    if "__match_args__" not in own:
        cls.__match_args__ = tuple(  # type: ignore[attr-defined,misc]
            f.name for f in record_fields.values() if f.init and not f.kw_only)
    if "__replace__" not in own:
        cls.__replace__ = _replace  # type: ignore[attr-defined]
    if slots:
        cls = _with_slots(cls, record_fields)
    if "__init__" not in cls.__dict__:
        cls.__init__ = _InitOnFirstUse(cls, record_fields, frozen)  # type: ignore[misc]
    return cls


@overload
def record(cls: type[_T], /) -> type[_T]: ...
@overload
def record(*, frozen: bool = ..., kw_only: bool = ..., slots: bool = ..., eq: bool = ...,  # noqa: F811
           repr: bool = ...) -> Callable[[type[_T]], type[_T]]: ...  # noqa: A002
@dataclass_transform(field_specifiers=(field, Field))
def record(cls: type[_T] | None = None, /, *, frozen: bool = False, kw_only: bool = False,  # noqa: F811
           slots: bool = False,
           eq: bool = True, repr: bool = True) -> Any:  # noqa: A002
    """Make ``cls`` a record: ``__init__`` from its annotated fields, ``repr``, ``==`` (and ``hash`` if frozen)."""

    def wrap(klass: type[_T]) -> type[_T]:
        return _process(klass, frozen, kw_only, slots, eq, repr)

    return wrap if cls is None else wrap(cls)


def is_record(obj: object) -> bool:
    return hasattr(obj if isinstance(obj, type) else type(obj), _FIELDS)


def fields(obj: object) -> tuple[Field, ...]:
    """The fields of a record class or instance, in ``__init__`` order."""
    klass = obj if isinstance(obj, type) else type(obj)
    try:
        return tuple(getattr(klass, _FIELDS).values())
    except AttributeError:
        raise TypeError(f"{klass.__qualname__} is not a record") from None


def replace(obj: _T, /, **changes: Any) -> _T:
    """A copy of the record ``obj`` with ``changes`` applied (``__init__`` and ``__post_init__`` run again)."""
    if isinstance(obj, type) or not is_record(obj):
        raise TypeError("replace() should be called on record instances")
    for f in fields(obj):
        if not f.init:
            if f.name in changes:  # the error dataclasses raises: ValueError, TypeError from Python 3.13
                raise (TypeError if sys.version_info >= (3, 13) else ValueError)(
                    f"field {f.name} is declared with init=False, it cannot be specified with replace()")
            continue
        if f.name not in changes:
            changes[f.name] = getattr(obj, f.name)
    return type(obj)(**changes)


def asdict(obj: object) -> dict[str, Any]:
    """The record as a dict, records nested in it (in lists, tuples and dicts too) converted as well."""
    if not is_record(obj) or isinstance(obj, type):
        raise TypeError("asdict() should be called on record instances")
    result = _plain(obj)
    assert isinstance(result, dict)
    return result


def _plain(value: Any) -> Any:
    if is_record(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return type(value)(*(_plain(v) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return type(value)((_plain(k), _plain(v)) for k, v in value.items())
    return value

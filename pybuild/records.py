"""Records: the data model's classes, with dataclass semantics and no import cost.

``@record`` is a drop-in for the subset of :func:`dataclasses.dataclass` that
pybuild uses (``frozen``, ``kw_only``, ``slots``, ``eq``; fields with a
default, a ``default_factory``, ``init=False``, ``repr=False``;
``__post_init__``; ``ClassVar`` annotations left alone; inheritance), plus
:func:`field`, :func:`fields`, :func:`replace` and :func:`asdict`. Type
checkers see it as a dataclass (PEP 681 ``dataclass_transform``).

Why not the standard library's: every ``pybuild`` command pays for the data
model before it does anything, and on the machines pybuild runs on,
``import dataclasses`` costs ~23 ms (it imports ``inspect``, which imports
``ast``, ``dis`` and ``tokenize``) and each ``@dataclass`` execs generated
source for four or five methods, ~0.5-1 ms a class. For ``pybuild run`` that
was more than bare ``runc run`` needs to start a container. Here a class
costs a few microseconds when it is defined: ``__init__`` binds its
arguments generically for the first 64 instances and is then generated (one
``exec``) for the classes made in bulk, and ``__repr__``, ``__eq__`` and
``__hash__`` are shared generic functions.
"""

from __future__ import annotations

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


MISSING: Any = _Missing()
_FIELDS = "__record_fields__"
_PARAMS = "__record_params__"


class Field:
    """One field of a record: its name, default (or factory) and whether it is in ``__init__``/``repr``/``==``."""

    __slots__ = ("name", "default", "default_factory", "init", "repr", "compare", "kw_only")

    def __init__(self, default: Any = MISSING, default_factory: Any = MISSING, init: bool = True,
                 repr: bool = True, compare: bool = True, kw_only: bool | None = None) -> None:  # noqa: A002
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.init = init
        self.repr = repr
        self.compare = compare
        self.kw_only = kw_only

    def __repr__(self) -> str:
        return f"Field(name={self.name!r}, default={self.default!r}, default_factory={self.default_factory!r})"

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


def _is_classvar(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return isinstance(text, str) and text.replace("typing.", "").startswith("ClassVar")


def _collect(cls: type, kw_only: bool) -> dict[str, Field]:
    collected: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        collected.update(base.__dict__.get(_FIELDS, {}))
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, MISSING)
        f = value if isinstance(value, Field) else Field(default=value)
        if f.default is not MISSING and type(f.default) in (list, dict, set):
            raise ValueError(f"mutable default {type(f.default).__name__} for field {name} "
                             "is not allowed: use default_factory")
        f.name = name
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


def _init_source(cls: type, record_fields: dict[str, Field], frozen: bool) -> tuple[str, dict[str, Any]]:
    """The source of ``cls.__init__`` and the globals it needs."""
    namespace: dict[str, Any] = {"MISSING": MISSING, "_setattr": object.__setattr__}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in record_fields.values():
        value = f.name
        default = ""
        if f.default_factory is not MISSING:
            namespace[f"_factory_{f.name}"] = f.default_factory
            if f.init:
                default = "MISSING"
                body.append(f"    if {f.name} is MISSING: {f.name} = _factory_{f.name}()")
            else:
                value = f"_factory_{f.name}()"
        elif f.default is not MISSING:
            namespace[f"_default_{f.name}"] = f.default
            default = f"_default_{f.name}"
            if not f.init:
                value = default
        if f.init:
            param = f.name if not f.has_default else f"{f.name}={default}"
            (keyword if f.kw_only else positional).append(param)
        elif not f.has_default:
            continue  # init=False without a default: left unset, as dataclasses does
        if frozen:
            body.append(f"    _setattr(self, {f.name!r}, {value})")
        else:
            body.append(f"    self.{f.name} = {value}")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    params = ["self", *positional]
    if keyword:
        params += ["*", *keyword]
    source = f"def __init__({', '.join(params)}):\n" + ("\n".join(body) or "    pass") + "\n"
    return source, namespace


COMPILE_AFTER = 64  # instantiations of a class bound generically before its __init__ is compiled


def _bind(record_fields: dict[str, Field], qualname: str, args: tuple[Any, ...],
          kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
    """The values ``__init__(*args, **kwargs)`` gives each field, checked as a compiled ``__init__`` would."""
    positional = [f for f in record_fields.values() if f.init and not f.kw_only]
    if len(args) > len(positional):
        raise TypeError(f"{qualname}.__init__() takes {len(positional) + 1} positional arguments "
                        f"but {len(args) + 1} were given")
    given = dict(zip((f.name for f in positional), args, strict=False))
    for name, value in kwargs.items():
        f = record_fields.get(name)
        if f is None or not f.init:
            raise TypeError(f"{qualname}.__init__() got an unexpected keyword argument {name!r}")
        if name in given:
            raise TypeError(f"{qualname}.__init__() got multiple values for argument {name!r}")
        given[name] = value
    values = []
    for f in record_fields.values():
        if f.init and f.name in given:
            values.append((f.name, given[f.name]))
        elif f.default_factory is not MISSING:
            values.append((f.name, f.default_factory()))
        elif f.default is not MISSING:
            values.append((f.name, f.default))
        elif f.init:
            raise TypeError(f"{qualname}.__init__() missing required argument: {f.name!r}")
    return values


def _lazy_init(cls: type, record_fields: dict[str, Field], frozen: bool) -> Callable[..., None]:
    """An ``__init__`` that binds its arguments generically for the first :data:`COMPILE_AFTER` instances
    (a command that makes a few records pays no ``exec``), then compiles the real one and installs it."""
    calls = 0

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        owner = type(self)
        target = cls
        # `cls` may have been replaced by its slotted copy: find the class that owns this stub.
        for klass in owner.__mro__:
            if klass.__dict__.get("__init__") is __init__:
                target = klass
                break
        calls += 1
        if calls <= COMPILE_AFTER:
            for name, value in _bind(record_fields, target.__qualname__, args, kwargs):
                object.__setattr__(self, name, value)
            if hasattr(self, "__post_init__"):
                self.__post_init__()
            return
        source, namespace = _init_source(target, record_fields, frozen)
        exec(source, namespace)  # noqa: S102 - generated from field names only
        real = namespace["__init__"]
        real.__qualname__ = f"{target.__qualname__}.__init__"
        target.__init__ = real  # type: ignore[misc]
        real(self, *args, **kwargs)

    return __init__


def _repr(self: Any) -> str:
    parts = ", ".join(f"{f.name}={getattr(self, f.name, MISSING)!r}"
                      for f in getattr(self, _FIELDS).values() if f.repr)
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


def _getstate(self: Any) -> list[Any]:
    return [getattr(self, f.name, MISSING) for f in getattr(self, _FIELDS).values()]


def _setstate(self: Any, state: list[Any]) -> None:
    for f, value in zip(getattr(self, _FIELDS).values(), state, strict=True):
        if value is not MISSING:
            object.__setattr__(self, f.name, value)


def _with_slots(cls: type, record_fields: dict[str, Field]) -> type:
    """A copy of ``cls`` whose instances keep their fields in ``__slots__`` (no ``__dict__``)."""
    inherited = {name for base in cls.__mro__[1:] for name in base.__dict__.get("__slots__", ())}
    namespace = dict(cls.__dict__)
    own = tuple(name for name in record_fields if name not in inherited)
    for name in own:
        namespace.pop(name, None)  # a default stays in the Field, not as a class attribute
    namespace.pop("__dict__", None)
    namespace.pop("__weakref__", None)
    namespace["__slots__"] = own
    namespace["__getstate__"] = _getstate
    namespace["__setstate__"] = _setstate
    slotted = type(cls)(cls.__name__, cls.__bases__, namespace)
    slotted.__qualname__ = cls.__qualname__
    return slotted


def _process(cls: type, frozen: bool, kw_only: bool, slots: bool, eq: bool, repr: bool) -> type:  # noqa: A002
    record_fields = _collect(cls, kw_only)
    setattr(cls, _FIELDS, record_fields)
    setattr(cls, _PARAMS, {"frozen": frozen})
    if "__init__" not in cls.__dict__:
        cls.__init__ = _lazy_init(cls, record_fields, frozen)  # type: ignore[misc]
    if repr and "__repr__" not in cls.__dict__:
        cls.__repr__ = _repr  # type: ignore[method-assign,assignment]
    if eq and "__eq__" not in cls.__dict__:
        cls.__eq__ = _eq  # type: ignore[method-assign,assignment]
        if "__hash__" not in cls.__dict__ or cls.__dict__["__hash__"] is None:
            cls.__hash__ = _hash if frozen else None  # type: ignore[method-assign,assignment]
    if frozen:
        cls.__setattr__ = _frozen_setattr  # type: ignore[method-assign,assignment]
        cls.__delattr__ = _frozen_delattr  # type: ignore[method-assign,assignment]
    if slots:
        cls = _with_slots(cls, record_fields)
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
    for f in fields(obj):
        if not f.init:
            if f.name in changes:
                raise ValueError(f"field {f.name} is declared with init=False and cannot be replaced")
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

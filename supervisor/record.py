"""Slotted value classes without ``dataclasses``, for the start-up path of ``run``.

``@dataclass`` writes each class's methods as source and compiles it (~0.4 ms a class),
and ``import dataclasses`` brings in ``inspect``; ~40 classes are defined before the agent
is released, so that was ~20 ms of every sandboxed command. ``@record`` builds the same
kind of class from shared functions and closures instead: ``__init__`` (positional and
keyword arguments, defaults, default factories, ``init=False``, ``__post_init__``),
``__repr__``, ``__eq__``, ``__hash__``, ``__match_args__``, pickling state and the frozen
assignment error, each as ``dataclass(frozen=..., slots=True)`` gives them
(tests/fuzz/test_record_props.py compares the two on generated class shapes). Type checkers
treat ``@record`` classes as dataclasses (``dataclass_transform``), and mypy checks
``replace`` calls as ``dataclasses.replace`` calls.
"""

from __future__ import annotations

import sys
from _thread import get_ident
from collections.abc import Callable
from itertools import repeat
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar, dataclass_transform, overload

__all__ = ["FrozenInstanceError", "field", "record", "replace"]

T = TypeVar("T")
_MISSING: Any = type("_MissingType", (), {"__repr__": lambda self: "MISSING"})()


class FrozenInstanceError(AttributeError):
    """Assigning to or deleting a field of a frozen record."""


class Field:
    """What ``field(...)`` declared for one attribute (kept on the class)."""

    __slots__ = ("compare", "default", "default_factory", "hash", "init", "name", "repr")

    def __init__(self, default: Any, default_factory: Any, init: bool, repr: bool,
                 hash: bool | None, compare: bool) -> None:  # fmt: skip
        if default is not _MISSING and default_factory is not _MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.init = init
        self.repr = repr
        self.hash = hash
        self.compare = compare


def field(*, default: Any = _MISSING, default_factory: Callable[[], Any] = _MISSING,
          init: bool = True, repr: bool = True, hash: bool | None = None,
          compare: bool = True) -> Any:  # fmt: skip
    """As ``dataclasses.field`` (without metadata or kw_only)."""
    return Field(default, default_factory, init, repr, hash, compare)


def _own_annotations(cls: type) -> dict[str, object]:
    # Not inspect.get_annotations: importing inspect is what this module avoids.
    found: dict[str, object] = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
    return found


def _is_classvar(annotation: object) -> bool:
    if isinstance(annotation, str):  # ``from __future__ import annotations``
        return annotation.replace(" ", "").startswith(("ClassVar", "typing.ClassVar"))
    return getattr(annotation, "__origin__", annotation) is getattr(
        sys.modules.get("typing"), "ClassVar", None)  # fmt: skip


def _fields_of(cls: type) -> list[Field]:
    """Inherited record fields first, then this class's annotations in order."""
    by_name: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        for f in base.__dict__.get("__record_fields__", ()):
            by_name[f.name] = f
    for name, annotation in _own_annotations(cls).items():
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, _MISSING)
        f = value if isinstance(value, Field) else Field(value, _MISSING, True, True, None, True)
        f.name = name
        if f.default is not _MISSING and type(f.default).__hash__ is None:
            raise ValueError(f"mutable default {type(f.default)} for field {name} "
                             "is not allowed: use default_factory")  # fmt: skip
        by_name[name] = f
    fields = list(by_name.values())
    seen_default = False
    for f in fields:
        if not f.init:
            continue
        if f.default is not _MISSING or f.default_factory is not _MISSING:
            seen_default = True
        elif seen_default:
            raise TypeError(f"non-default argument {f.name!r} follows default argument")
    return fields


class _Plan:
    """Per class: what ``__init__`` and the other shared methods need, precomputed."""

    __slots__ = ("compared", "defaults", "hashed", "n_init", "names", "post_init", "qualname",
                 "repr_names", "rest", "set", "shapes")  # fmt: skip

    def __init__(self, cls: type, fields: list[Field], frozen: bool) -> None:
        init = [f for f in fields if f.init]
        self.qualname = cls.__qualname__
        self.names = tuple(f.name for f in init)
        self.defaults = tuple(_default(f) for f in init)
        self.n_init = len(init)
        self.shapes: dict[tuple[Any, ...], _Shape] = {}  # see _shape
        # init=False fields with a default or a factory are set after the arguments.
        self.rest = tuple((f.name, _default(f)) for f in fields if not f.init
                          and _default(f) is not _MISSING)  # fmt: skip
        # Frozen: past the class's __setattr__ (as dataclasses' object.__setattr__);
        # mutable: through it, as dataclasses' ``self.x = x``.
        self.set: Callable[[object, str, object], None] = (
            object.__setattr__ if frozen else setattr
        )
        self.post_init = getattr(cls, "__post_init__", None)
        self.repr_names = tuple(f.name for f in fields if f.repr)
        self.compared = _values_of(tuple(f.name for f in fields if f.compare))
        self.hashed = _values_of(
            tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash))
        )


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def _default(f: Field) -> Any:
    return f.default if f.default_factory is _MISSING else _Factory(f.default_factory)


def _shape(plan: _Plan, key: tuple[Any, ...]) -> _Shape:
    """Check one way of calling (count of positional arguments, keyword names) against the
    fields, as Python binds a signature; what the defaults fill in for it."""
    n, keywords = key[0], key[1:]
    if n > plan.n_init:
        raise TypeError(f"{plan.qualname}.__init__() takes {plan.n_init + 1} positional "
                        f"arguments but {n + 1} were given")  # fmt: skip
    for name in keywords:
        if name in plan.names[:n]:
            raise TypeError(f"{plan.qualname}.__init__() got multiple values for argument "
                            f"{name!r}")  # fmt: skip
        if name not in plan.names:
            raise TypeError(f"{plan.qualname}.__init__() got an unexpected keyword argument "
                            f"{name!r}")  # fmt: skip
    rest = [(name, d) for name, d in zip(plan.names[n:], plan.defaults[n:], strict=True)
            if name not in keywords]  # fmt: skip
    missing = [name for name, d in rest if d is _MISSING]
    if missing:
        raise TypeError(f"{plan.qualname}.__init__() missing {len(missing)} required "
                        f"argument(s): {', '.join(map(repr, missing))}")  # fmt: skip
    shape = _Shape(plan.names[:n] + keywords, rest)
    if len(plan.shapes) < _MAX_SHAPES:  # the call sites' shapes: few, but bounded anyway
        plan.shapes[key] = shape
    return shape


_MAX_SHAPES = 64


class _Shape:
    """One way of calling a record's ``__init__``: the fields its arguments give, in the
    order they come (positional, keywords), then those its defaults fill."""

    __slots__ = ("factories", "names", "values")

    def __init__(self, given: tuple[str, ...], rest: list[tuple[str, Any]]) -> None:
        self.values = tuple(d for name, d in rest if type(d) is not _Factory)
        self.names = given + tuple(name for name, d in rest if type(d) is not _Factory)
        self.factories = tuple((name, d.make) for name, d in rest if type(d) is _Factory)


def _make_init(plan: _Plan) -> Callable[..., None]:
    """The class's ``__init__``: a closure over its plan (no source compiled)."""
    names, n_init, shapes, set_field = plan.names, plan.n_init, plan.shapes, plan.set
    finish = bool(plan.rest) or plan.post_init is not None  # besides a shape's factories

    def __init__(self: object, /, *args: Any, **kwargs: Any) -> None:
        if kwargs:
            key = (len(args), *kwargs)
            shape = shapes.get(key) or _shape(plan, key)
            any(map(set_field, repeat(self), shape.names, (*args, *kwargs.values(),
                                                           *shape.values)))  # fmt: skip
        elif len(args) == n_init:  # all positional
            shape = None
            any(map(set_field, repeat(self), names, args))  # one loop in C: returns None
        else:
            key = (len(args),)
            shape = shapes.get(key) or _shape(plan, key)
            any(map(set_field, repeat(self), shape.names, (*args, *shape.values)))
        if finish or (shape is not None and shape.factories):
            _finish(plan, shape, self)

    __init__.__qualname__ = f"{plan.qualname}.__init__"
    return __init__


def _finish(plan: _Plan, shape: _Shape | None, obj: object) -> None:
    """Default factories, init=False fields, then ``__post_init__``."""
    if shape is not None:
        for name, make in shape.factories:
            plan.set(obj, name, make())
    for name, value in plan.rest:
        plan.set(obj, name, value.make() if type(value) is _Factory else value)
    if plan.post_init is not None:
        plan.post_init(obj)


_repr_running: set[tuple[int, int]] = set()


def _repr(self: Any) -> str:
    key = (id(self), get_ident())
    if key in _repr_running:
        return "..."  # a record that contains itself (as reprlib.recursive_repr)
    _repr_running.add(key)
    try:
        plan: _Plan = self.__record_plan__
        parts = ", ".join(f"{name}={getattr(self, name)!r}" for name in plan.repr_names)
        return f"{type(self).__qualname__}({parts})"
    finally:
        _repr_running.discard(key)


def _values_of(names: tuple[str, ...]) -> Callable[[object], tuple[Any, ...]]:
    """The tuple of these attributes (attrgetter reads two or more in C)."""
    if len(names) >= 2:
        return attrgetter(*names)
    get = attrgetter(*names) if names else None

    def one_or_none(obj: object) -> tuple[Any, ...]:
        return () if get is None else (get(obj),)

    return one_or_none


def _eq(self: Any, other: object) -> object:
    compared = self.__record_plan__.compared
    if other.__class__ is not self.__class__:
        return NotImplemented
    return compared(self) == compared(other)  # tuples, as dataclasses compare


def _hash(self: Any) -> int:
    return hash(self.__record_plan__.hashed(self))


def _frozen_setattr(self: Any, name: str, value: object) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _getstate(self: Any) -> list[Any]:
    return [getattr(self, f.name) for f in self.__record_fields__]


def _setstate(self: Any, state: list[Any]) -> None:
    for f, value in zip(self.__record_fields__, state, strict=True):
        object.__setattr__(self, f.name, value)


def _build(cls: type[T], frozen: bool) -> type[T]:
    fields = _fields_of(cls)
    own = [f.name for f in fields if f.name in _own_annotations(cls)]
    namespace = dict(cls.__dict__)
    for name in own:
        namespace.pop(name, None)
    namespace.pop("__dict__", None)
    namespace.pop("__weakref__", None)
    namespace["__slots__"] = tuple(own)
    metaclass: Any = type(cls)
    new = metaclass(cls.__name__, cls.__bases__, namespace)
    new.__qualname__ = cls.__qualname__
    new.__record_fields__ = tuple(fields)
    new.__record_plan__ = _Plan(new, fields, frozen)
    methods: dict[str, object] = {
        "__init__": _make_init(new.__record_plan__), "__repr__": _repr, "__eq__": _eq,
        "__match_args__": tuple(f.name for f in fields if f.init),
    }  # fmt: skip
    if frozen:
        methods.update(__setattr__=_frozen_setattr, __delattr__=_frozen_delattr,
                       __getstate__=_getstate, __setstate__=_setstate)  # fmt: skip
    for name, value in methods.items():
        if name not in namespace:  # what the class writes itself wins, as with dataclasses
            setattr(new, name, value)
    # A __hash__ the class wrote stays (not the None Python sets beside a written __eq__);
    # otherwise frozen: hash over the compared fields, mutable: unhashable (as dataclasses).
    own_hash = namespace.get("__hash__", _MISSING)
    if own_hash is _MISSING or (own_hash is None and "__eq__" in namespace):
        new.__hash__ = _hash if frozen else None
    return new  # type: ignore[no-any-return]


@overload
def record(cls: type[T], /) -> type[T]: ...
@overload
def record(*, frozen: bool = True) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[T] | None = None, /, *,
           frozen: bool = True) -> type[T] | Callable[[type[T]], type[T]]:  # fmt: skip
    """``dataclass(frozen=frozen, slots=True)`` without compiling source (see the module)."""
    if cls is None:
        return lambda c: _build(c, frozen)
    return _build(cls, frozen)


if TYPE_CHECKING:
    from dataclasses import replace as replace  # mypy checks the field names and types
else:

    def replace(obj, /, **changes):
        """A copy of a record with ``changes`` (as ``dataclasses.replace``)."""
        for f in type(obj).__record_fields__:
            if not f.init:
                if f.name in changes:
                    raise ValueError(f"field {f.name} is declared with init=False, "
                                     "it cannot be specified with replace()")  # fmt: skip
            elif f.name not in changes:
                changes[f.name] = getattr(obj, f.name)
        return type(obj)(**changes)

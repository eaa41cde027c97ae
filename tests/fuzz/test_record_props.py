"""``@record`` behaves as ``dataclass(frozen=..., slots=True)`` on generated class shapes.

Each example declares the same fields (required, defaults given plainly or through
``field``, default factories, ``init=False`` with and without a default, repr/compare/hash
flags, a ClassVar, names like ``self``) once for each decorator, calls both classes the same
way (positional and keyword arguments in any split and order, defaults left out, and broken
calls: too many arguments, unknown or repeated keywords, a required one missing), and
compares everything observable: errors, field values, repr, ==, hash, __match_args__,
frozen assignment and deletion, ``replace``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor import record as rec

NAMES = ["a", "b", "c", "d", "e", "self", "field", "args", "kwargs", "shape"]
NAN = float("nan")
SHARED_LIST = [1]
# Small domain: equal and unequal instances both come up; NaN checks identity-then-==,
# the list makes hashing fail.
VALUES = st.sampled_from([0, 1, 1.0, "a", None, NAN, (1,), SHARED_LIST])
DEFAULTS = st.sampled_from([0, 1, "a", None, (1,)] * 3 + [[]])  # a list: refused by both
KINDS = ["required", "default", "field_default", "factory", "noinit_default",
         "noinit_factory", "noinit_unset"]  # fmt: skip


@dataclass
class Spec:
    name: str
    kind: str
    default: Any
    flags: dict[str, Any]

    @property
    def init(self) -> bool:
        return not self.kind.startswith("noinit")

    @property
    def has_default(self) -> bool:
        return self.kind not in ("required", "noinit_unset")

    def declare(self, field: Any) -> Any:
        """The class attribute that declares this field (``MISSING``: none)."""
        init, plain = self.init, self.flags == {"repr": True, "compare": True, "hash": None}
        if self.kind == "default" and plain:
            return self.default  # a plain default
        if self.kind in ("default", "field_default", "noinit_default"):
            return field(default=self.default, init=init, **self.flags)
        if self.kind in ("factory", "noinit_factory"):
            return field(default_factory=list, init=init, **self.flags)
        if self.kind == "noinit_unset":
            return field(init=False, **self.flags)
        if not plain:
            return field(**self.flags)
        return dataclasses.MISSING


@st.composite
def shapes(draw: st.DrawFn) -> tuple[list[Spec], bool]:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=6))
    flags = st.fixed_dictionaries(
        {"repr": st.booleans(), "compare": st.booleans(), "hash": st.sampled_from([None, True, False])}
    )
    specs = [
        Spec(name, draw(st.sampled_from(KINDS)), draw(DEFAULTS), draw(flags)) for name in names
    ]
    if draw(st.integers(0, 9)) > 0:  # mostly valid: required init fields first
        specs.sort(key=lambda s: s.init and s.has_default)
    return specs, draw(st.booleans())


def build(specs: list[Spec], frozen: bool, classvar: bool, ours: bool) -> Any:
    """The class ``Shape`` declared by ``specs``, or the exception declaring it raised."""
    field = rec.field if ours else dataclasses.field
    ns: dict[str, Any] = {"__module__": __name__, "__qualname__": "Shape",
                          "__annotations__": {}}  # fmt: skip
    if classvar:
        ns["__annotations__"]["K"] = "ClassVar[int]"
        ns["K"] = 7
    for s in specs:
        ns["__annotations__"][s.name] = "object"
        declared = s.declare(field)
        if declared is not dataclasses.MISSING:
            ns[s.name] = declared
    try:
        cls = type("Shape", (), ns)
        if ours:
            return rec.record(frozen=frozen)(cls)
        return dataclasses.dataclass(frozen=frozen, slots=True)(cls)
    except (TypeError, ValueError) as e:
        return type(e)


Call = tuple[list[Any], dict[str, Any]]


@st.composite
def calls(draw: st.DrawFn, specs: list[Spec]) -> Call:
    init = [s for s in specs if s.init]
    n = draw(st.integers(0, len(init)))
    args = [draw(VALUES) for _ in init[:n]]
    kwargs = {s.name: draw(VALUES) for s in init[n:]
              if not (s.has_default and draw(st.booleans()))}  # fmt: skip
    kwargs = dict(draw(st.permutations(list(kwargs.items()))))
    broken = draw(st.sampled_from([None] * 4 + ["extra", "unknown", "repeat", "drop"]))
    if broken == "extra":
        args.append(0)
    elif broken == "unknown":
        kwargs["zz"] = 0
    elif broken == "repeat" and n:
        kwargs[init[draw(st.integers(0, n - 1))].name] = 0
    elif broken == "drop":
        required = [name for name in kwargs if not next(s for s in init if s.name == name)
                    .has_default]  # fmt: skip
        if required:
            del kwargs[draw(st.sampled_from(required))]
    return args, kwargs


def attempt(f: Any, *args: Any, **kwargs: Any) -> Any:
    """What calling ``f`` gave: a value, or the exception's type and message."""
    try:
        return ("value", f(*args, **kwargs))
    except Exception as e:  # compared between the two implementations
        return ("raised", type(e).__name__, isinstance(e, AttributeError), _message(e))


def _message(e: Exception) -> str:
    # Argument errors name the function differently (generated __init__ vs ours):
    # the type is compared, not the wording.
    return "" if isinstance(e, TypeError) else str(e)


def state(obj: Any, specs: list[Spec]) -> list[Any]:
    """Each field's value, or the error reading it raised (an unset init=False field)."""
    return [attempt(getattr, obj, s.name) for s in specs]


def same(x: Any, y: Any) -> bool:
    """Equal observations, values compared as a tuple compares them (NaN: identity)."""
    return (x,) == (y,)


def observe(obj: Any, other: Any, specs: list[Spec]) -> list[Any]:
    # Not a Shape but with the same attributes: never equal.
    values = zip(specs, state(obj, specs), strict=True)
    lookalike = SimpleNamespace(**{s.name: v[1] for s, v in values if v[0] == "value"})
    return [
        state(obj, specs), attempt(repr, obj), attempt(lambda: obj == other),
        attempt(lambda: obj == lookalike), attempt(lambda: lookalike == obj),
        attempt(lambda: obj != other), attempt(lambda: obj == obj), attempt(hash, obj),
        attempt(lambda: type(obj).__match_args__),
        [attempt(lambda o=obj, n=n: n in type(o).__dict__) for n in ("K",)],
        # Factory defaults are fresh per instance.
        [attempt(lambda s=s: getattr(obj, s.name) is getattr(other, s.name))
         for s in specs if "factory" in s.kind],
    ]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(data=st.data(), shape=shapes(), classvar=st.booleans())
def test_a_record_behaves_as_a_slotted_dataclass(data: st.DataObject,
                                                 shape: tuple[list[Spec], bool],
                                                 classvar: bool) -> None:  # fmt: skip
    specs, frozen = shape
    theirs = build(specs, frozen, classvar, ours=False)
    ours = build(specs, frozen, classvar, ours=True)
    assert isinstance(theirs, type) and isinstance(ours, type)
    if not hasattr(theirs, "__dataclass_fields__"):  # declaring the class failed
        assert ours is theirs, (ours, theirs)
        return
    first, second = data.draw(calls(specs)), data.draw(calls(specs))
    made = {}
    for name, cls in (("theirs", theirs), ("ours", ours)):
        made[name] = [attempt(cls, *args, **kwargs) for args, kwargs in (first, second)]
    assert [m[0] for m in made["ours"]] == [m[0] for m in made["theirs"]]
    for m_ours, m_theirs in zip(made["ours"], made["theirs"], strict=True):
        if m_ours[0] == "raised":
            assert m_ours == m_theirs
    if made["theirs"][0][0] == "raised":
        return
    (_, d1), (_, r1) = made["theirs"][0], made["ours"][0]
    d2 = made["theirs"][1][1] if made["theirs"][1][0] == "value" else d1
    r2 = made["ours"][1][1] if made["ours"][1][0] == "value" else r1
    assert same(observe(r1, r2, specs), observe(d1, d2, specs))

    # replace: new values for some fields (an init=False one or an unknown name: errors).
    changes = {s.name: data.draw(VALUES) for s in specs if data.draw(st.booleans())}
    if data.draw(st.integers(0, 5)) == 0:
        changes["zz"] = 0
    replaced_d = attempt(dataclasses.replace, d1, **changes)
    replaced_r = attempt(rec.replace, r1, **changes)
    assert replaced_r[0] == replaced_d[0]
    if replaced_d[0] == "value":
        assert same(observe(replaced_r[1], r1, specs), observe(replaced_d[1], d1, specs))
    else:
        assert replaced_r[1] == replaced_d[1]

    # Assignment and deletion: refused on frozen classes (fields and other names alike),
    # plain slot behaviour on mutable ones.
    for name in [s.name for s in specs] + ["zz"]:
        value = data.draw(VALUES)
        if frozen and name == "zz":
            # 3.11's frozen slotted dataclass raises TypeError here (its __setattr__ calls
            # super() with the class it replaced); a record refuses as for a field.
            assert attempt(setattr, r1, name, value)[1:3] == ("FrozenInstanceError", True)
            assert attempt(delattr, r1, name)[1:3] == ("FrozenInstanceError", True)
            continue
        assert same(attempt(setattr, r1, name, value), attempt(setattr, d1, name, value))
        assert same(state(r1, specs), state(d1, specs))
        assert same(attempt(delattr, r1, name), attempt(delattr, d1, name))
        assert same(state(r1, specs), state(d1, specs))


@given(n=st.integers(0, 4))
def test_frozen_errors_are_attribute_errors_named_like_dataclasses(n: int) -> None:
    cls = rec.record(type("Shape", (), {"__annotations__": {"x": "int"}, "__module__": __name__}))
    obj = cls(n)
    try:
        obj.x = n + 1
    except AttributeError as e:
        assert type(e).__name__ == dataclasses.FrozenInstanceError.__name__
        assert isinstance(e, rec.FrozenInstanceError)
        assert str(e) == "cannot assign to field 'x'"
    else:
        raise AssertionError("a frozen record accepted an assignment")
    assert obj.x == n


_ = ClassVar  # the generated classes' "ClassVar[int]" annotation is resolved in this module

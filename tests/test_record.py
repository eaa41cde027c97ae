"""supervisor.record: what the property tests do not generate (pickling, generics,
__post_init__, ClassVar objects, the import it avoids)."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import typing
from typing import ClassVar, Generic, TypeVar

import pytest

from supervisor.record import FrozenInstanceError, field, record, replace

T = TypeVar("T")


@record
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()


@record
class Box(Generic[T]):
    item: T


@record(frozen=False)
class Counter:
    rate: float
    seen: list[int] = field(default_factory=list)
    doubled: float = field(init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError("rate must be positive")
        self.doubled = self.rate * 2


def test_frozen_records_pickle_and_copy_to_equal_values() -> None:
    p = Point(1, tags=("a",))
    for clone in (pickle.loads(pickle.dumps(p)), copy.copy(p), copy.deepcopy(p)):
        assert clone == p and clone is not p and type(clone) is Point
    with pytest.raises(FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    assert p.x == 1


def test_generic_records_subscript_and_compare_by_value() -> None:
    assert Box[int](3) == Box(3)
    assert Box(3) != Box("3")
    assert hash(Box(3)) == hash(Box(3))


def test_post_init_runs_after_the_fields_and_its_errors_propagate() -> None:
    c = Counter(1.5)
    assert (c.doubled, c.seen) == (3.0, [])
    assert Counter(1.5).seen is not c.seen  # a fresh list each time
    c.rate = 2.0  # mutable
    assert c.doubled == 3.0 and c != Counter(2.0, [])  # doubled is not recomputed
    with pytest.raises(ValueError, match="positive"):
        Counter(0)
    with pytest.raises(TypeError):
        hash(c)  # mutable with ==: unhashable, as dataclasses


def test_replace_makes_a_new_record_through_init() -> None:
    p = Point(1, 2)
    assert replace(p, y=5) == Point(1, 5)
    assert p == Point(1, 2)
    with pytest.raises(ValueError, match="init=False"):
        replace(Counter(1.0), doubled=1.0)  # type: ignore[call-arg]
    assert replace(Counter(1.0), rate=4.0).doubled == 8.0  # __post_init__ ran again


def test_classvar_objects_and_strings_are_not_fields() -> None:
    ns = {"__annotations__": {"a": int, "K": ClassVar[int], "L": typing.ClassVar, "M": "ClassVar[str]"},
          "K": 1, "L": 2, "M": "m", "__module__": __name__}  # fmt: skip
    cls = record(type("C", (), ns))
    assert cls.__match_args__ == ("a",)
    assert (cls(5).K, cls(5).L, cls(5).M) == (1, 2, "m")


def test_a_field_named_self_is_an_ordinary_keyword() -> None:
    cls = record(type("C", (), {"__annotations__": {"self": "int"}, "__module__": __name__}))
    assert cls(self=3).self == 3
    assert repr(cls(3)) == "C(self=3)"


def test_importing_record_loads_neither_dataclasses_nor_inspect() -> None:
    code = ("import sys, supervisor.record; "
            "print(sorted({'dataclasses', 'inspect'} & set(sys.modules)))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

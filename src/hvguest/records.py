"""``@record``: frozen, slotted value classes without the ``dataclasses`` module.

No C counterpart: the daemons' memory budget. ``dataclasses`` imports
``inspect``, which imports ``ast``, ``dis`` and ``tokenize``: about 1 MB of
RSS kept for the whole life of every daemon, although it is only used while
classes are created. ``record`` builds what ``@dataclass(frozen=True,
slots=True)`` builds for the plain classes this project declares (fields from
the annotations, defaults, ``field(default_factory=...)``), and no more: no
``order``, ``kw_only``, ``InitVar``, ``ClassVar`` or ``__post_init__``.

* ``__init__`` (positional or keyword, defaults), ``__repr__`` ("Name(a=1)"),
  ``__eq__`` (same class, equal fields), ``__hash__``, ``__match_args__``
  (so ``case KvpGet(pool, key)`` works), ``__slots__``;
* frozen: assigning or deleting a field raises :class:`FrozenRecordError`
  (an ``AttributeError``, as for frozen dataclasses); ``frozen=False`` makes a
  mutable record (no ``__hash__``, like a plain ``@dataclass(slots=True)``);
* :func:`replace` is ``dataclasses.replace`` for records.

Type checkers see it as a dataclass (``typing.dataclass_transform``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar, dataclass_transform, overload

_T = TypeVar("_T")
_MISSING: Final[Any] = object()
#: Names the class body may define that are not instance state.
_NOT_COPIED: Final = frozenset({"__dict__", "__weakref__"})


class FrozenRecordError(AttributeError):
    """A field of a frozen record was assigned or deleted."""


class Field:
    """What ``field()`` returns: a field's default or the factory that makes it."""

    __slots__ = ("default", "default_factory")

    def __init__(self, default: Any, default_factory: Callable[[], Any] | None) -> None:
        self.default = default
        self.default_factory = default_factory


def field(*, default: Any = _MISSING, default_factory: Callable[[], Any] | None = None) -> Any:
    """A field whose default is ``default`` or made by ``default_factory()`` per instance."""
    return Field(default, default_factory)


@overload
def record(cls: type[_T], /) -> type[_T]: ...
@overload
def record(*, frozen: bool = True) -> Callable[[type[_T]], type[_T]]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(
    cls: type[_T] | None = None, /, *, frozen: bool = True
) -> type[_T] | Callable[[type[_T]], type[_T]]:
    """Make ``cls`` a record (module docstring): ``@record`` or ``@record(frozen=False)``."""
    if cls is None:
        return lambda inner: _build(inner, frozen=frozen)
    return _build(cls, frozen=frozen)


def replace(obj: _T, /, **changes: Any) -> _T:
    """A copy of the record ``obj`` with ``changes`` applied (``dataclasses.replace``)."""
    names: tuple[str, ...] = type(obj).__match_args__  # type: ignore[attr-defined]
    unknown = changes.keys() - set(names)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field(s) {sorted(unknown)}")
    values = {name: changes[name] if name in changes else getattr(obj, name) for name in names}
    return type(obj)(**values)


def _build(cls: type[_T], *, frozen: bool) -> type[_T]:
    # Not inspect.get_annotations: importing inspect is what this module avoids.
    names = tuple(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063
    defaults: dict[str, Any] = {}
    body = {key: value for key, value in cls.__dict__.items() if key not in _NOT_COPIED}
    for name in names:
        if name in body:
            defaults[name] = body.pop(name)
    namespace: dict[str, Any] = {"_set": object.__setattr__, "_MISSING": _MISSING}
    parameters: list[str] = []
    assignments: list[str] = []
    for name in names:
        default = defaults.get(name, _MISSING)
        factory = None
        if isinstance(default, Field):
            default, factory = default.default, default.default_factory
        if factory is not None:
            namespace[f"_factory_{name}"] = factory
            parameters.append(f"{name}=_MISSING")
            assignments.append(f"if {name} is _MISSING: {name} = _factory_{name}()")
        elif default is not _MISSING:
            namespace[f"_default_{name}"] = default
            parameters.append(f"{name}=_default_{name}")
        elif any("=" in parameter for parameter in parameters):
            raise TypeError(f"{cls.__name__}: field {name} without a default follows one with")
        else:
            parameters.append(name)
        if frozen:
            assignments.append(f"_set(self, {name!r}, {name})")
        else:
            assignments.append(f"self.{name} = {name}")
    source = f"def __init__(self, {', '.join(parameters)}):\n"
    source += "".join(f"    {line}\n" for line in assignments or ["pass"])
    # The same generated-source technique dataclasses uses: a plain function
    # runs as fast as a hand-written __init__, a generic one would not.
    exec(source, namespace)  # noqa: S102 - the source is built from annotation names only
    body["__init__"] = namespace["__init__"]
    body["__slots__"] = names
    body["__match_args__"] = names
    body["__repr__"] = _repr
    body["__eq__"] = _eq
    body["__hash__"] = _hash if frozen else None
    if frozen:
        body["__setattr__"] = _frozen_setattr
        body["__delattr__"] = _frozen_delattr
        body["__getstate__"] = _getstate
        body["__setstate__"] = _setstate
    metaclass: Any = type(cls)
    built: type[_T] = metaclass(cls.__name__, cls.__bases__, body)
    built.__init__.__qualname__ = f"{built.__qualname__}.__init__"
    return built


def _values(obj: object) -> tuple[Any, ...]:
    return tuple(getattr(obj, name) for name in type(obj).__match_args__)  # type: ignore[attr-defined]


def _repr(self: object) -> str:
    names: tuple[str, ...] = type(self).__match_args__  # type: ignore[attr-defined]
    inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
    return f"{type(self).__qualname__}({inner})"


def _eq(self: object, other: object) -> object:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self: object) -> int:
    return hash(_values(self))


def _frozen_setattr(self: object, name: str, value: object) -> None:
    raise FrozenRecordError(f"cannot assign to field {name!r} of {type(self).__name__}")


def _frozen_delattr(self: object, name: str) -> None:
    raise FrozenRecordError(f"cannot delete field {name!r} of {type(self).__name__}")


def _getstate(self: object) -> tuple[Any, ...]:
    return _values(self)


def _setstate(self: object, state: tuple[Any, ...]) -> None:
    for name, value in zip(type(self).__match_args__, state, strict=True):  # type: ignore[attr-defined]
        object.__setattr__(self, name, value)


__all__ = ["Field", "FrozenRecordError", "field", "record", "replace"]

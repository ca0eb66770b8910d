"""Named registries: the one mechanism by which trainrecon finds a method, a trainer or a scoring protocol by name.

A :class:`Registry` maps names to entries of one kind, keeps them in the order they were registered, and
answers a name it does not hold with one line naming the registry's kind and every name it does hold
(``--method: unknown method 'x' (available: haim, ...)``).  Where each entry takes a config class of its own
(a method's ``Config``, a trainer's config), :meth:`Registry.for_config` finds the entry of a config object.
The registries themselves live with what they register: :data:`trainrecon.attacks.method.METHODS`,
:data:`trainrecon.training.TRAINERS`, :data:`trainrecon.metrics.protocols.PROTOCOLS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

from .errors import TrainreconError

T = TypeVar("T")


class Registry(MutableMapping[str, T], Generic[T]):
    """Entries of one ``kind`` by name, in registration order; a read-only-by-convention mapping.

    ``config_of``: for registries whose entries take a config class, the function giving an entry's config class
    (used by :meth:`for_config`).  Assigning ``registry[name] = entry`` registers; ``del registry[name]`` takes an
    entry out (a test's temporary entry)."""

    def __init__(self, kind: str, config_of: Callable[[T], type] | None = None) -> None:
        self.kind = kind
        self.config_of = config_of
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Make ``entry`` available as ``name``; a name already taken by another entry is refused (ValueError:
        a programming error, not a user's)."""
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str, where: str | None = None) -> T:  # type: ignore[override]
        """The entry registered as ``name``; an unknown name raises one line, prefixed by ``where`` (the option
        or config field it came from) when given."""
        if name not in self._entries:
            prefix = f"{where}: " if where else ""
            raise TrainreconError(f"{prefix}unknown {self.kind} {name!r} (available: {', '.join(self._entries)})")
        return self._entries[name]

    def config_named(self, name: Any) -> type | None:
        """The config class of the entry registered as ``name``, or None for anything else (a name never
        registered, or not a string: what an older or damaged record may hold)."""
        if self.config_of is None:
            raise TypeError(f"the {self.kind} registry has no config classes")
        return self.config_of(self._entries[name]) if isinstance(name, str) and name in self._entries else None

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def for_config(self, cfg: Any) -> tuple[str, T]:
        """(name, entry) of the entry whose config class is exactly ``cfg``'s type; one line when none is."""
        if self.config_of is None:
            raise TypeError(f"the {self.kind} registry has no config classes")
        for name, entry in self._entries.items():
            if type(cfg) is self.config_of(entry):
                return name, entry
        raise TrainreconError(f"no {self.kind} takes a {type(cfg).__name__}")

    # -- the mapping protocol --------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __setitem__(self, name: str, entry: T) -> None:
        self.register(name, entry)

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


__all__ = ["Registry"]

"""A small name -> factory registry, one instance per category (models, datasets, losses, ...).

Components register themselves with a decorator and are built by name from config data, so a new
method or dataset never needs a new CLI flag or an edit of a central ``if/elif`` chain.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """Raised for an unknown or duplicate name; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly instead.
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) of one category.

    >>> MODELS = Registry("model")
    >>> @MODELS.register("my_net")
    ... def build_my_net(num_classes: int): ...
    >>> MODELS.build("my_net", num_classes=19)
    """

    def __init__(self, category: str) -> None:
        self.category = category
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a factory under ``name`` (default: the object's ``__name__``)."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            key = name or factory.__name__
            if key in self._entries:
                raise RegistryError(f"{self.category} '{key}' is already registered")
            self._entries[key] = factory
            return factory

        return decorator

    def add(self, name: str, factory: Callable[..., T]) -> None:
        """Register ``factory`` under ``name`` without a decorator (for generated entries)."""
        self.register(name)(factory)

    def get(self, name: str) -> Callable[..., T]:
        """Return the factory registered as ``name``; unknown names list the valid ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.category} '{name}'. Valid {self.category} names: {', '.join(self.names())}"
            ) from None

    def build(self, name: str, *args: Any, **kwargs: Any) -> T:
        """Look up ``name`` and call its factory with the given arguments.

        Arguments that do not fit the factory's signature (a misspelt config option, say) raise
        :class:`RegistryError` naming the entry and listing its valid options, instead of a bare TypeError.
        """
        factory = self.get(name)
        self._check_arguments(name, factory, args, kwargs)
        return factory(*args, **kwargs)

    def _check_arguments(
        self, name: str, factory: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):  # no introspectable signature: the call itself will complain
            return
        try:
            signature.bind(*args, **kwargs)
        except TypeError as err:
            named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            valid = [p.name for p in signature.parameters.values() if p.kind in named]
            raise RegistryError(
                f"{self.category} '{name}': {err}. Valid options: {', '.join(valid)}"
            ) from None

    def names(self) -> list[str]:
        """Sorted list of registered names."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.category!r}, {len(self)} entries)"

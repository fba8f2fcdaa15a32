"""A named registry: the seam behind data sources, loss terms, unlearning methods and baselines."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from kaepipe.errors import ConfigError, KaepipeError


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


class Registry(dict[str, T], Generic[T]):
    """Entries by their `name`, in registration order. `register` refuses a second entry of one name (or a
    reserved name); `lookup` raises `error` naming the unknown name and listing the known ones."""

    def __init__(self, what: str, error: type[KaepipeError] = ConfigError, reserved: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.what, self.error, self.reserved = what, error, reserved

    def register(self, item: T) -> T:
        if item.name in self or item.name in self.reserved:
            raise ValueError(f"{self.what} '{item.name}' is registered already (or reserved)")
        self[item.name] = item
        return item

    def lookup(self, name: str) -> T:
        try:
            return self[name]
        except KeyError:
            raise self.error(f"unknown {self.what} '{name}'; known: {sorted(self)}") from None

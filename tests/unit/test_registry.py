"""kaepipe.registry: entries by name, a second of one name refused, an unknown name named with the known ones."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from kaepipe.data import SOURCES, get_source
from kaepipe.errors import ConfigError, DataError
from kaepipe.registry import Registry


@dataclass(frozen=True)
class Item:
    name: str


def test_register_lookup_and_errors():
    reg: Registry[Item] = Registry("widget", reserved=("total",))
    a = reg.register(Item("a"))
    assert reg.lookup("a") is a and list(reg) == ["a"] and reg.get("missing") is None  # dict.get is untouched
    with pytest.raises(ValueError, match="widget 'a' is registered already"):
        reg.register(Item("a"))
    with pytest.raises(ValueError, match="'total'"):
        reg.register(Item("total"))
    with pytest.raises(ConfigError, match=r"unknown widget 'b'; known: \['a'\]"):
        reg.lookup("b")


def test_the_data_sources_are_a_registry():
    assert {"yinyang", "mnist", "fashion_mnist"} <= set(SOURCES)
    assert get_source("yinyang").classes == 3
    with pytest.raises(DataError, match="unknown data source 'cifar'"):
        get_source("cifar")

"""Reliability fixes found by probing (issue 28): each test fails without its fix."""

from __future__ import annotations

import pytest

from comp.config import load_yaml
from comp.errors import CompError


# ---------------------------------------------------------------- YAML: one reader, limits


def test_merge_keys_and_small_aliases_still_read() -> None:
    doc = load_yaml("base: &b {x: 1, y: [1, 2]}\nother: {<<: *b, z: 3, x: 2}\nagain: *b\n")
    assert doc["other"] == {"x": 2, "y": [1, 2], "z": 3} and doc["again"] == {"x": 1, "y": [1, 2]}


def test_duplicate_keys_are_still_refused_next_to_a_merge() -> None:
    with pytest.raises(Exception, match=r"duplicate key 'z'"):
        load_yaml("base: &b {x: 1}\nother: {<<: *b, z: 3, z: 4}\n")


def test_deeply_nested_yaml_is_one_error() -> None:
    with pytest.raises(CompError, match=r"--set x is nested too deeply to read"):
        load_yaml("[" * 5000 + "]" * 5000, source="--set x")

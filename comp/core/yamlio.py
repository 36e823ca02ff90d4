"""comp's one YAML reader: safe_load semantics, duplicate keys refused, and caps on size and alias expansion
(a "billion laughs" file is refused in milliseconds instead of hanging the command)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from comp.core.errors import CompError


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: SafeLoader merges it, own keys win
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue  # an unhashable key is refused by SafeLoader itself
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (keep one of them)",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


MAX_YAML_BYTES = 1_000_000  # comp's YAML files are a few KB; a bigger one is the wrong file (or an attack)
MAX_ALIAS_VALUES = 10_000  # values that aliases (*name) may add beyond those written: nested anchors grow exponentially


def load_yaml(text: str, source: str = "YAML") -> Any:
    """YAML text through UniqueKeyLoader, refusing text over MAX_YAML_BYTES and aliases past MAX_ALIAS_VALUES.

    The aliases are counted on the composed node graph (each node once) before anything is built: a document of
    nested anchors (a "billion laughs") composes in milliseconds but expands to billions of values when merged.
    """
    if len(text) > MAX_YAML_BYTES:
        raise CompError(f"{source} is {len(text):,} characters, more than comp reads from a YAML file "
                        f"({MAX_YAML_BYTES:,}); check that it is the right file")
    loader = UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        written, expanded = _count_nodes(node, source)
        if expanded - written > MAX_ALIAS_VALUES:
            raise CompError(f"{source}: its aliases (*name) expand to {_at_least(expanded - written)} more values than "
                            f"written (comp allows {MAX_ALIAS_VALUES:,}); write the values out instead of nesting anchors")
        return loader.construct_document(node)
    except RecursionError:
        raise CompError(f"{source} is nested too deeply to read; flatten it") from None
    finally:
        loader.dispose()


def _count_nodes(root: yaml.Node, source: str) -> tuple[int, float]:
    """(distinct nodes, nodes with every alias expanded) of a composed YAML document; a recursive alias is refused."""
    sizes: dict[int, float] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> float:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise CompError(f"{source}: an alias refers to a value that contains it (a recursive anchor); remove it")
        active.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        total = 1.0 + sum(size(c) for c in children)
        active.discard(key)
        sizes[key] = total
        return total

    expanded = size(root)
    return len(sizes), expanded


def _at_least(n: float) -> str:
    return f"{n:,.0f}" if n < 1e15 else f"{n:.1e}"


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: the problem and where."""
    problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from `path` (comp.yaml, an experiment, a record): the one reader of comp's YAML files."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CompError(f"{path} could not be read ({exc.strerror}); check the path and its permissions") from None
    if size > MAX_YAML_BYTES:
        raise CompError(f"{path} is {size:,} bytes, more than comp reads from a YAML file ({MAX_YAML_BYTES:,}); "
                        "check that it is the right file")
    try:
        data = load_yaml(path.read_text(), source=str(path)) or {}
    except yaml.YAMLError as exc:
        raise CompError(f"{path} is not valid YAML: {yaml_problem(exc)}; fix the file and rerun") from None
    if not isinstance(data, dict):
        raise CompError(f"{path} must hold a mapping of keys, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------- overrides and merging


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """A new dict: `top` over `base`, merging nested mappings key by key."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "space":
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict[str, Any]:
    """'train.lr=1e-3' -> {'train': {'lr': 0.001}} (the value parsed as a YAML scalar)."""
    if "=" not in text:
        raise CompError(f"--set expects dotted.key=value, got {text!r}; e.g. --set train.lr=1e-3")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise CompError(f"--set expects dotted.key=value, got {text!r}")
    try:
        parsed = load_yaml(value, source=f"--set {key}") if value.strip() else None
    except yaml.YAMLError as exc:
        raise CompError(f"--set {text!r}: value is not valid YAML ({yaml_problem(exc)})") from None
    if isinstance(parsed, str):
        parsed = _yaml11_float(parsed)
    return nest(key, parsed)


def nest(key: str, value: Any) -> dict[str, Any]:
    """'train.lr', 1e-3 -> {'train': {'lr': 1e-3}}."""
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _yaml11_float(text: str) -> Any:
    """YAML 1.1 reads '1e-3' as a string; a user means the number."""
    try:
        return float(text) if any(c in text for c in "eE") and not text.isalpha() else text
    except ValueError:
        return text


def _float_fix(node: Any) -> Any:
    """Apply `_yaml11_float` through a parsed YAML document."""
    if isinstance(node, dict):
        return {k: _float_fix(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_float_fix(v) for v in node]
    return _yaml11_float(node) if isinstance(node, str) else node

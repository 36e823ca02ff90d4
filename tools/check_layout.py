"""Check comp's stage layout: no import circle, no stage importing a later stage, no module over MAX_LINES,
no module at the top of comp/ but __init__.py and __main__.py (every other module lives in its stage's package).

    python tools/check_layout.py          # prints each problem; exit 1 when there is one

Every import counts, also those inside functions and under TYPE_CHECKING: a lazy import is still a
dependency. The stages, in pipeline order (a stage may import itself and the stages before it):
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

STAGES = ("core", "data", "report", "init", "eda", "model", "run", "train", "tune", "infer", "blend",
          "recipes", "export", "api", "comp", "cli", "__main__")
MAX_LINES = 650

__doc__ += "\n    " + " < ".join(STAGES) + "\n"


def module_name(path: Path, package_root: Path) -> str:
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "comp"


def imports_of(path: Path, module: str, modules: set[str]) -> set[str]:
    """The comp modules `path` imports (the longest known module name of each import)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found = set()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            if name == "comp" or name.startswith("comp."):
                target = known(name)
                if target and target != module:
                    found.add(target)
    # `from comp.x import y` names module comp.x and, when y is a module, comp.x.y: keep only the deepest of a chain
    return {t for t in found if t == "comp" or not any(o.startswith(t + ".") for o in found)}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def problems(package_root: Path) -> list[str]:
    files = {module_name(p, package_root): p for p in sorted(package_root.rglob("*.py"))
             if "__pycache__" not in p.parts}
    graph = {m: imports_of(p, m, set(files)) for m, p in files.items()}
    found = []
    for m, targets in sorted(graph.items()):
        if files[m].parent == package_root and files[m].stem not in ("__init__", "__main__"):
            found.append(f"{m}: a module at the top of {package_root.name}/; put it in its stage's package")
            continue
        if stage_of(m) not in STAGES:
            found.append(f"{m}: stage {stage_of(m)!r} is not in tools/check_layout.py's STAGES")
            continue
        for t in sorted(targets):
            # a package's own __init__ is part of it; `comp` (the public API) may be imported only by cli
            if stage_of(t) in STAGES and STAGES.index(stage_of(t)) > STAGES.index(stage_of(m)):
                found.append(f"{m} imports {t}: stage {stage_of(m)!r} may not import the later stage {stage_of(t)!r}")
    for circle in cycles(graph):
        found.append("import circle: " + " <-> ".join(circle))
    for m, p in files.items():
        n = len(p.read_text().splitlines())
        if n > MAX_LINES:
            found.append(f"{p}: {n} lines (at most {MAX_LINES}: split it by what its parts do)")
    return found


def main(argv: list[str] | None = None) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "comp"
    found = problems(root)
    for line in found:
        print(line)
    print(f"{len(found)} layout problem(s) in {root}" if found else f"layout ok: {root}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

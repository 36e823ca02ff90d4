"""Table helpers the recipes share: the multiclass check, a training table with rows added."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from comp.core.errors import CompError

if TYPE_CHECKING:
    from comp.data.tables import Tables


def require_multiclass(tables: "Tables", what: str) -> None:
    kind = getattr(getattr(tables, "task", None), "kind", "multiclass")
    if kind != "multiclass":
        raise CompError(f"{what} supports multiclass tasks only, and this competition's task is {kind!r}; "
                        f"remove it from the experiment")


def with_train(tables: "Tables", train: Any) -> "Tables":
    """The same tables over another training frame (its targets re-derived from train['y'])."""
    fields = {f.name for f in dataclasses.fields(tables)}
    return dataclasses.replace(tables, train=train, **({"targets": None} if "targets" in fields else {}))

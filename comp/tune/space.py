"""The search space: validated from `tune.space` (dotted config keys), sampled into config overrides.

An entry is `dotted.key: {float: [low, high], log: true}`, `{int: [low, high], step: 16}`
or `{categorical: [a, b, c]}`; keys are the same as `--set` takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from comp.core.config import Config, all_keys, build_config, check_keys, deep_merge, nest
from comp.core.errors import CompError, did_you_mean

KINDS = ("float", "int", "categorical")
OPTIONS = {"float": ("log", "step"), "int": ("log", "step"), "categorical": ()}
SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Param:
    """One dimension of the space."""

    key: str  # dotted config key, also the Optuna parameter name
    kind: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)


def _sections() -> set[str]:
    keys = all_keys()
    return {k for k in keys if any(other.startswith(k + ".") for other in keys)}


def _check_key(key: str, where: str) -> None:
    """A space key must be a leaf of the config that tuning may change."""
    if not isinstance(key, str) or not key:
        raise CompError(f"{where}: keys must be dotted config keys like train.lr, got {key!r}")
    check_keys(nest(key, None), source=f"{where}: ")
    if key in _sections():
        leaves = [k for k in all_keys() if k.startswith(key + ".")]
        raise CompError(f"{where}: {key} is a section, not a value; use one of its keys: {', '.join(leaves)}")
    if key.split(".")[0] == "tune":
        raise CompError(f"{where}: tune.* settings cannot be tuned; use a model, image, augment or train key")


def _bounds(key: str, kind: str, spec: dict[str, Any], where: str) -> tuple[float, float]:
    bounds = spec[kind]
    number = int if kind == "int" else (int, float)
    if (not isinstance(bounds, (list, tuple)) or len(bounds) != 2
            or any(isinstance(b, bool) or not isinstance(b, number) for b in bounds)):
        raise CompError(f"{where}: {kind} needs [low, high] as two {kind}s, got {bounds!r}; e.g. {{{kind}: [1, 8]}}")
    low, high = bounds
    if low > high:
        raise CompError(f"{where}: low > high in {kind}: [{low}, {high}]; write the smaller bound first")
    if spec.get("log") and low <= 0:
        raise CompError(f"{where}: log: true needs low > 0, got low={low}")
    if spec.get("log") and spec.get("step") is not None:
        raise CompError(f"{where}: log and step cannot be used together (got log: true, step: {spec['step']})")
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, number) or step <= 0):
        raise CompError(f"{where}: step must be a positive {kind}, got {step!r}")
    return low, high


def parse_entry(key: str, spec: Any) -> Param:
    """One `tune.space` entry as a Param; CompError naming the entry when it is malformed."""
    where = f"tune.space[{key!r}]"
    _check_key(key, where)
    if not isinstance(spec, dict):
        raise CompError(f"{where} must be a mapping like {{float: [1.0e-5, 1.0e-2], log: true}}, got {spec!r}")
    kinds = [k for k in spec if k in KINDS]
    if len(kinds) != 1:
        unknown = [str(k) for k in spec if k not in KINDS and k not in ("log", "step")]
        hint = did_you_mean(unknown[0], KINDS) if unknown else ""
        raise CompError(f"{where}: needs exactly one kind of {', '.join(KINDS)}, got keys {list(spec)}{hint}")
    kind = kinds[0]
    for option in spec:
        if option != kind and option not in OPTIONS[kind]:
            allowed = ", ".join(OPTIONS[kind]) or "none"
            raise CompError(f"{where}: unknown option {option!r} for {kind}{did_you_mean(str(option), OPTIONS[kind])} "
                            f"(options for {kind}: {allowed})")
    if kind == "categorical":
        return Param(key, kind, choices=_choices(spec[kind], where))
    low, high = _bounds(key, kind, spec, where)
    return Param(key, kind, low=low, high=high, log=bool(spec.get("log", False)), step=spec.get("step"))


def _choices(choices: Any, where: str) -> tuple[Any, ...]:
    if not isinstance(choices, (list, tuple)) or not choices:
        raise CompError(f"{where}: categorical needs a non-empty list of choices, got {choices!r}")
    for choice in choices:
        if not isinstance(choice, SCALARS):
            raise CompError(f"{where}: categorical choices must be numbers, strings, booleans or null, "
                            f"got {choice!r}; tune list-valued keys (e.g. image.size as [h, w]) one number at a time")
    return tuple(choices)


def parse_space(space: dict[str, Any]) -> tuple[Param, ...]:
    """All entries of `tune.space`, validated, in the order written."""
    if not isinstance(space, dict):
        raise CompError(f"tune.space must be a mapping of dotted keys to ranges, got {space!r}")
    return tuple(parse_entry(key, spec) for key, spec in space.items())


def _size_choices(size: int) -> list[int]:
    """A short list of image sizes around `size` (multiples of 16)."""
    return sorted({max(16, 16 * round(size * f / 16)) for f in (0.75, 1.0, 1.25)})


def default_space(cfg: Config) -> dict[str, Any]:
    """The space used when tune.space is empty: lr, weight decay, label smoothing, augment preset, image size."""
    lr = cfg.train.lr if cfg.train.lr != "auto" else 1.0e-3  # auto: the range around the usual rates
    space: dict[str, Any] = {
        "train.lr": {"float": [min(1.0e-5, lr / 3), max(1.0e-2, lr * 3)], "log": True},
        "train.weight_decay": {"float": [1.0e-6, 1.0e-1], "log": True},
        "train.label_smoothing": {"float": [0.0, 0.2]},
    }
    if not cfg.augment.transforms:  # a custom list replaces the preset, so the preset would do nothing
        space["augment.preset"] = {"categorical": ["none", "auto", "light", "medium", "heavy"]}
    if isinstance(cfg.image.size, int) and len(_size_choices(cfg.image.size)) > 1:
        space["image.size"] = {"categorical": _size_choices(cfg.image.size)}
    return space


def resolve_space(cfg: Config) -> tuple[Param, ...]:
    """The experiment's space (or the default one), validated."""
    return parse_space(dict(cfg.tune.space) or default_space(cfg))


def apply_params(cfg: Config, params: dict[str, Any]) -> Config:
    """A new Config: `cfg` with the sampled values applied as overrides (CompError if invalid)."""
    raw = cfg.model_dump(mode="json")
    for dotted, value in cfg.filled_defaults().items():  # a default follows the trial's own settings, as its run's
        section, key = dotted.split(".")                  # would (a 96 px base tried at 160 px: 160 px's margin)
        if raw[section][key] == value:
            raw[section][key] = None
    for key, value in params.items():
        raw = deep_merge(raw, nest(key, value))
    return build_config(raw, source="trial config: ")

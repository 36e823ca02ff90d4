"""Is this machine ready to train: versions, the CUDA build against each GPU, a tensor test per device."""

from __future__ import annotations

import importlib.metadata as md
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "torchvision", "timm", "albumentations", "optuna", "ttach", "numpy", "opencv-python-headless")


@dataclass
class GpuReport:
    index: int
    name: str
    capability: str  # "8.0"
    memory_gib: float
    arch: str  # "sm_80"
    arch_supported: bool
    bf16: bool
    tensor_ok: bool
    error: str = ""
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.arch_supported and self.tensor_ok


@dataclass
class DoctorReport:
    python: str
    platform: str
    versions: dict[str, str]
    torch_cuda_build: str | None
    cudnn: int | None
    cuda_available: bool
    arch_list: list[str]
    duplicate_installs: dict[str, list[str]]
    cpu_tensor_ok: bool
    gpus: list[GpuReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.cpu_tensor_ok and all(g.ok for g in self.gpus) and not self.duplicate_installs.get("torch")

    def problems(self) -> list[str]:
        out = [f"GPU {g.index} ({g.name}): {g.error or 'cannot run torch'}. {g.fix}".strip() for g in self.gpus if not g.ok]
        if self.duplicate_installs.get("torch"):
            where = ", ".join(self.duplicate_installs["torch"])
            out.append(
                f"torch is installed more than once ({where}); the one imported may not be the one you "
                "upgraded: uninstall all but one (pip uninstall torch / conda remove pytorch) in this environment"
            )
        if not self.cpu_tensor_ok:
            out.append("a tensor operation on the CPU failed: reinstall torch")
        return out


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def duplicate_installs(names: tuple[str, ...] = ("torch", "torchvision"), paths: list[str] | None = None) -> dict[str, list[str]]:
    """Packages whose metadata appears in more than one place on sys.path (pip + conda, user + venv)."""
    found: dict[str, list[str]] = {}
    for entry in paths if paths is not None else sys.path:
        folder = Path(entry)
        if not folder.is_dir():
            continue
        for name in names:
            hits = [p for p in folder.glob(f"{name}-*.dist-info")] + [p for p in folder.glob(f"{name}-*.egg-info")]
            for hit in hits:
                found.setdefault(name, []).append(str(hit))
    return {name: sorted(set(where)) for name, where in found.items() if len(set(where)) > 1}


def arch_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Does the torch build hold kernels for this GPU: its sm_XY, or PTX (compute_XY) it can JIT?"""
    major, minor = capability
    if f"sm_{major}{minor}" in arch_list:
        return True
    # Same-major binaries run on later minors (sm_86 runs sm_80 code); PTX JIT-compiles upward.
    same_major = [a for a in arch_list if a.startswith("sm_") and a[3:-1] == str(major) and int(a[-1]) <= minor]
    ptx = [a for a in arch_list if a.startswith("compute_") and int(a[8:]) <= major * 10 + minor]
    return bool(same_major or ptx)


def arch_fix(capability: tuple[int, int], arch_list: list[str], torch_version: str, cuda_build: str | None) -> str:
    major, minor = capability
    built = ", ".join(a for a in arch_list if a.startswith("sm_")) or "none"
    need = "12.8 or newer" if major >= 10 else "11.8 or newer" if major >= 9 else "11.x or newer"
    return (
        f"torch {torch_version} (CUDA build {cuda_build or 'none'}) has kernels for {built} but this GPU is "
        f"sm_{major}{minor}: install a torch build for CUDA {need} (pip install --upgrade torch torchvision "
        "with the CUDA index that matches your driver), then rerun `comp doctor`"
    )


def tensor_test(device: str) -> tuple[bool, str]:
    """A tiny matmul on `device`, compared against the CPU."""
    import torch

    try:
        a = torch.arange(12.0).reshape(3, 4)
        want = a @ a.T
        got = (a.to(device) @ a.to(device).T).cpu()
        return bool(torch.allclose(got, want)), ""
    except Exception as exc:  # a broken device shows up as any kind of runtime error
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def gpu_report(index: int, cuda: Any, arch_list: list[str], torch_version: str, cuda_build: str | None) -> GpuReport:
    props = cuda.get_device_properties(index)
    cap = tuple(cuda.get_device_capability(index))
    supported = arch_supported(cap, arch_list)
    ok, error = tensor_test(f"cuda:{index}") if supported else (False, "no kernels for this GPU in the torch build")
    return GpuReport(
        index=index,
        name=str(props.name),
        capability=f"{cap[0]}.{cap[1]}",
        memory_gib=round(props.total_memory / 2**30, 1),
        arch=f"sm_{cap[0]}{cap[1]}",
        arch_supported=supported,
        bf16=cap[0] >= 8,
        tensor_ok=ok,
        error=error,
        fix="" if supported else arch_fix(cap, arch_list, torch_version, cuda_build),
    )


def diagnose() -> DoctorReport:
    """Collect every fact `comp doctor` shows."""
    import torch

    cuda = torch.cuda
    available = bool(cuda.is_available())
    arch_list = list(cuda.get_arch_list()) if available else []
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    report = DoctorReport(
        python=sys.version.split()[0],
        platform=platform.platform(),
        versions=package_versions(),
        torch_cuda_build=torch.version.cuda,
        cudnn=cudnn,
        cuda_available=available,
        arch_list=arch_list,
        duplicate_installs=duplicate_installs(),
        cpu_tensor_ok=tensor_test("cpu")[0],
    )
    if available:
        report.gpus = [gpu_report(i, cuda, arch_list, torch.__version__, torch.version.cuda) for i in range(cuda.device_count())]
    return report


def pretrained_check(workspace: Path | str = ".", experiment: str = "baseline") -> tuple[bool, str] | None:
    """(ok, one line) on whether the experiment's pretrained weights are reachable here (comp.model.factory.pretrained_status),
    or None when `workspace` holds no comp.yaml. Downloads nothing."""
    root = Path(workspace)
    if not (root / "comp.yaml").is_file():
        return None
    from comp.core.config import load_config
    from comp.core.errors import CompError
    from comp.model.factory import pretrained_status

    try:
        cfg = load_config(root, experiment)
    except CompError as exc:  # a broken config is reported, not raised: doctor still checks the machine
        return False, f"cannot read experiment {experiment!r}: {exc}"
    return pretrained_status(cfg.model)


# What each optional extra of comp enables (pip install 'comp[NAME]'); `comp doctor` says which are installed.
EXTRAS = {"track": "TensorBoard, MLflow and W&B tracking", "notebook": "progress widgets in Jupyter",
          "export": "comp export --onnx", "kaggle": "comp submit", "multilabel": "multilabel folds"}


def extras_installed() -> dict[str, list[str]]:
    """Each optional extra -> the packages of it that are missing here ([] when it is installed), from comp's own
    package metadata (the extras pyproject.toml declares)."""
    import re

    try:
        requires = md.metadata("comp").get_all("Requires-Dist") or []
    except md.PackageNotFoundError:
        requires = []
    out: dict[str, list[str]] = {name: [] for name in EXTRAS}
    for line in requires:
        found = re.match(r"\s*([A-Za-z0-9_.-]+).*;\s*extra\s*==\s*['\"]([^'\"]+)['\"]", line)
        if found is None or found.group(2) not in out:
            continue
        try:
            md.version(found.group(1))
        except md.PackageNotFoundError:
            out[found.group(2)].append(found.group(1))
    return out

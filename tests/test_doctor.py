from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

import comp.doctor as doctor
from comp.cli import app

runner = CliRunner()


class FakeCuda:
    """torch.cuda facts of a machine with the given GPUs (capability tuples)."""

    def __init__(self, caps, arch_list):
        self.caps, self.arch_list = caps, arch_list

    def is_available(self):
        return True

    def device_count(self):
        return len(self.caps)

    def get_arch_list(self):
        return self.arch_list

    def get_device_capability(self, i):
        return self.caps[i]

    def get_device_properties(self, i):
        return SimpleNamespace(name=f"Fake GPU {i}", total_memory=85_520_809_984)  # an "80 GB" H100: 79.65 GiB


@pytest.fixture
def fake_gpus(monkeypatch):
    def install(caps, arch_list, tensor_ok=True):
        monkeypatch.setattr(torch, "cuda", FakeCuda(caps, arch_list))
        real = doctor.tensor_test
        monkeypatch.setattr(doctor, "tensor_test", lambda d: real(d) if d == "cpu" else (tensor_ok, "" if tensor_ok else "RuntimeError: boom"))

    return install


def test_cpu_machine_is_ready():
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "torch" in result.output and "CPU tensor test: ok" in result.output and "ready" in result.output


def test_supported_gpu_reports_facts(fake_gpus):
    fake_gpus([(9, 0)], ["sm_80", "sm_90"])
    report = doctor.diagnose()
    (gpu,) = report.gpus
    assert (gpu.capability, gpu.arch, gpu.arch_supported, gpu.bf16, gpu.memory_gib) == ("9.0", "sm_90", True, True, 79.6)
    assert gpu.tensor_ok and not gpu.fix and report.ok and report.problems() == []
    result = runner.invoke(app, ["doctor"], terminal_width=200)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "Fake GPU 0" in line)
    assert [cell.strip() for cell in row.strip("│ ").split("│")] == ["0", "Fake GPU 0", "9.0", "79.6", "yes", "yes", "ok"]
    assert "kernels for sm_80, sm_90" in result.output and result.output.rstrip().endswith("ready")


def test_pre_ampere_gpu_has_no_bf16(fake_gpus):
    fake_gpus([(7, 5)], ["sm_75"])
    (gpu,) = doctor.diagnose().gpus
    assert (gpu.capability, gpu.arch, gpu.arch_supported, gpu.bf16) == ("7.5", "sm_75", True, False)


def test_gpu_missing_from_build_fails_with_fix(fake_gpus):
    fake_gpus([(8, 0), (12, 0)], ["sm_50", "sm_60", "sm_70", "sm_80", "sm_90"])
    report = doctor.diagnose()
    assert [g.arch_supported for g in report.gpus] == [True, False] and not report.ok
    assert [g.tensor_ok for g in report.gpus] == [True, False]  # no tensor test on a GPU without kernels
    assert report.problems()[0].startswith("GPU 1 (Fake GPU 1): no kernels for this GPU in the torch build.")
    assert "sm_120" in report.gpus[1].fix and "CUDA 12.8 or newer" in report.gpus[1].fix
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert "GPU 1 (Fake GPU 1)" in result.output and "NO (sm_120)" in result.output


def test_failed_tensor_test_fails(fake_gpus):
    fake_gpus([(8, 6)], ["sm_80"], tensor_ok=False)
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1 and "boom" in result.output


@pytest.mark.parametrize(
    ("cap", "archs", "ok"),
    [((8, 6), ["sm_80"], True), ((7, 5), ["sm_80"], False), ((9, 0), ["sm_80", "compute_80"], True), ((6, 1), [], False)],
)
def test_arch_supported_rules(cap, archs, ok):
    assert doctor.arch_supported(cap, archs) is ok


def test_duplicate_torch_installs_found(tmp_path):
    for site in ("a", "b"):
        (tmp_path / site / "torch-2.5.0.dist-info").mkdir(parents=True)
    dup = doctor.duplicate_installs(("torch",), [str(tmp_path / "a"), str(tmp_path / "b")])
    assert len(dup["torch"]) == 2
    assert doctor.duplicate_installs(("torch",), [str(tmp_path / "a")]) == {}

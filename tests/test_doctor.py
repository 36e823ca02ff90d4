from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

import comp.run.doctor as doctor
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


def write_experiment(ws, model: dict) -> None:
    import yaml

    (ws / "experiments" / "baseline.yaml").write_text(yaml.safe_dump({"model": model}))


def test_doctor_in_a_workspace_says_whether_the_baseline_weights_are_reachable(make_ws, tmp_path, monkeypatch):
    ws = make_ws()
    monkeypatch.chdir(ws)
    result = runner.invoke(app, ["doctor"], terminal_width=400)
    assert result.exit_code == 0, result.output
    assert "baseline weights: test_resnet: training from scratch (model.pretrained: false)" in result.output
    write_experiment(ws, {"name": "test_resnet", "pretrained_path": str(tmp_path / "gone.safetensors")})
    result = runner.invoke(app, ["doctor"], terminal_width=400)
    assert result.exit_code == 0, result.output  # a warning about the workspace, not a machine problem
    assert f"baseline weights: model.pretrained_path '{tmp_path / 'gone.safetensors'}' does not exist" in result.output


def test_doctor_outside_a_workspace_prints_no_weights_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0 and "weights:" not in result.output
    assert doctor.pretrained_check(tmp_path) is None


def test_pretrained_check_reports_a_broken_experiment(make_ws):
    ws = make_ws()
    write_experiment(ws, {"nmae": "resnet18"})
    ok, line = doctor.pretrained_check(ws)
    assert not ok and line.startswith("cannot read experiment 'baseline': ") and "nmae" in line


def test_init_ends_with_the_weights_line(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    for name in ("cat", "dog"):
        (tmp_path / "data" / "train" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "data" / "train" / name / f"{i}.png")
    result = runner.invoke(app, ["init", "--from", "folders", str(tmp_path / "data" / "train"),
                                 "--workspace", str(tmp_path / "ws")], terminal_width=400)
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("baseline weights: resnet34: pretrained weights (timm/resnet34") and (
        "are not cached: this machine may have no internet; set model.pretrained_path" in last)


def test_doctor_lists_the_optional_extras(monkeypatch):
    import importlib.metadata as md

    real = md.version
    monkeypatch.setattr(md, "version", lambda name: (_ for _ in ()).throw(md.PackageNotFoundError(name))
                        if name == "kaggle" else real(name))
    extras = doctor.extras_installed()
    assert set(extras) == {"track", "notebook", "export", "kaggle", "multilabel"}
    assert extras["kaggle"] == ["kaggle"] and extras["track"] == []  # the dev install has the trackers
    out = runner.invoke(app, ["doctor"]).output
    assert "optional extras:" in out and "notebook     installed" in out
    assert "kaggle       not installed (pip install 'comp[kaggle]'; missing kaggle)" in out

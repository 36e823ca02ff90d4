"""comp export: a bundle whose predict.py, run where comp cannot be imported, reproduces the submission.

Parity runs the bundle in a fresh virtual environment that sees this environment's packages
(torch, timm, ...) but not comp (a .pth file lists the site-packages folder; comp's editable finder
there is never run), and asserts inside that `import comp` would fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from comp.cli import app
from comp.core.config import load_config
from comp.data.tables import load_tables
from comp.model.factory import build_model
from comp.core.layout import Layout, read_json, write_csv
from conftest import TINY_EXPERIMENT, write_fake_best

runner = CliRunner()
K = 2
RUN_BUNDLE = ("import importlib.util, runpy, sys\n"
              "assert importlib.util.find_spec('comp') is None, 'comp is importable'\n"
              "sys.argv = sys.argv[1:]\n"
              "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def invoke(ws: Path, *args: str):
    return runner.invoke(app, [*args, "--workspace", str(ws)])


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory) -> str:
    """A fresh venv's python that imports this environment's packages, but not comp."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "packages.pth").write_text("\n".join(sorted(paths)) + "\n")
    return str(venv / "bin" / "python")


def run_bundle(python: str, bundle: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([python, "-I", "-c", RUN_BUNDLE, str(bundle / "predict.py"), *args, "--workers", "1"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def fake_member(ws_root: Path, exp: str, spec: dict, *, seed: int) -> None:
    """experiments/<exp>.yaml, config.yaml and fold checkpoints with random weights (no training)."""
    (ws_root / "experiments" / f"{exp}.yaml").write_text(yaml.safe_dump(spec))
    ws, cfg = Layout.at(ws_root), load_config(ws_root, exp, [f"folds.k={K}"])
    ws.write_config(exp, cfg)
    tables = load_tables(cfg, ws, check_images=False)
    names = [str(c) for c in tables.classes]
    for f in range(K):
        torch.manual_seed(seed + f)
        model = build_model(cfg.model.model_copy(update={"pretrained": False}), len(names))
        for m in model.modules():  # non-trivial batch-norm statistics, so eval-mode inference is really tested
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        write_fake_best(ws, exp, f, cfg, model, names)
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1, (len(tables.train), len(names)))
    z[np.arange(len(z)), tables.train["y"].to_numpy()] += 2.0
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    oof = pd.DataFrame({"id": tables.train["id"], "fold": pd.factorize(tables.train["group"])[0] % K,
                        "label": tables.train["label"]})
    oof[[f"p_{c}" for c in names]] = p
    write_csv(ws.oof_csv(exp), oof)


def member_spec(**changes) -> dict:
    spec = {key: dict(value) for key, value in TINY_EXPERIMENT.items()}
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        spec[section][key] = value
    return spec


def assert_parity(ws: Path, name: str, bundle_out: Path, members: list[str], probs_dir: Path) -> float:
    """The bundle's submission equals submissions/<name>.csv byte for byte; members' probabilities to 1e-5."""
    assert bundle_out.read_bytes() == (ws / "submissions" / f"{name}.csv").read_bytes()
    worst = 0.0
    for m in members:
        want = pd.read_csv(ws / "experiments" / m / "test.csv", dtype={"id": str}).set_index("id")
        got = pd.read_csv(probs_dir / f"{m}.csv", dtype={"id": str}).set_index("id").loc[want.index, want.columns]
        worst = max(worst, float(np.abs(got.to_numpy() - want.to_numpy()).max()))
    assert worst <= 1e-5, worst
    print(f"{name}: bundle vs comp, max abs probability difference {worst:.3g}")  # shown with pytest -s
    return worst


def test_exported_submission_reproduces_it_without_comp(tiny_ws, tmp_path, bare_python, one_torch_thread):
    spec = member_spec(train__epochs=1)
    (tiny_ws / "experiments" / "baseline.yaml").write_text(yaml.safe_dump(spec))
    trained = invoke(tiny_ws, "fold-train", "--k", str(K))
    assert trained.exit_code == 0, trained.output
    fake_member(tiny_ws, "wide", member_spec(image__size=[40, 36], tta__transforms="d4", tta__merge="gmean"), seed=3)
    made = invoke(tiny_ws, "ensemble", "-e", "baseline", "-e", "wide", "--method", "geometric", "--bias", "--name", "blend")
    assert made.exit_code == 0, made.output

    exported = invoke(tiny_ws, "export", "blend", "--to", str(tmp_path / "bundle"), "--dataset-id", "alice/blend-bundle")
    assert exported.exit_code == 0, exported.output
    assert "checked: predict.py matches test.csv" in exported.output
    bundle = tmp_path / "bundle"
    files = {p.name for p in bundle.iterdir()}
    assert {"bundle.json", "predict.py", "notebook.ipynb", "dataset-metadata.json", "baseline.config.yaml",
            "baseline.fold0.safetensors", "wide.fold1.safetensors"} <= files
    assert all(p.is_file() for p in bundle.iterdir())  # flat: `kaggle datasets create -p DIR` skips folders
    doc = read_json(bundle / "bundle.json")
    assert doc["blend"]["method"] == "geometric" and doc["blend"]["bias"] is not None
    assert [m["tta"]["name"] for m in doc["members"]] == ["hflip", "d4"]
    assert doc["members"][1]["preprocess"]["input_hw"] == [40, 36] and doc["versions"]["torch"]
    trained_with = read_json(tiny_ws / "experiments" / "baseline" / "scores.json")["environment"]
    assert doc["trained_with"] == {"baseline": trained_with, "wide": None}  # wide is a fake: no scores.json
    assert trained_with["torch"] == torch.__version__.split("+")[0]  # the package version (no local build tag)
    assert read_json(bundle / "dataset-metadata.json")["id"] == "alice/blend-bundle"

    out = tmp_path / "run" / "submission.csv"
    done = run_bundle(bare_python, bundle, tmp_path, "--images", str(tiny_ws / "data" / "images"),
                      "--csv", str(tiny_ws / "data" / "test.csv"), "--out", str(out), "--device", "cpu",
                      "--probs", str(tmp_path / "probs"))
    assert done.returncode == 0, done.stderr
    assert_parity(tiny_ws, "blend", out, ["baseline", "wide"], tmp_path / "probs")


def box_workspace(make_ws) -> Path:
    """Bigger images (shrunk by area), fractional boxes, a probabilities submission in a shuffled sample order."""
    ws = make_ws("boxes", size=48, n_test=7)
    rng = np.random.default_rng(5)
    for name in ("train", "test"):
        frame = pd.read_csv(ws / "data" / f"{name}.csv", dtype=str)
        x0, y0 = rng.uniform(0, 0.4, len(frame)), rng.uniform(0, 0.4, len(frame))
        frame["x0"], frame["y0"] = x0.round(3), y0.round(3)
        frame["x1"], frame["y1"] = (x0 + rng.uniform(0.3, 0.6, len(frame))).round(3), (y0 + 0.5).round(3)
        if name == "test":
            frame.loc[0, ["x0", "x1"]] = np.nan  # no box: the whole image
        frame.to_csv(ws / "data" / f"{name}.csv", index=False)
    sample = pd.read_csv(ws / "data" / "sample_submission.csv", dtype=str).sample(frac=1.0, random_state=1)
    sample = sample.drop(columns=["ans"]).assign(c2=0.2, c0=0.5, c1=0.3)
    sample.to_csv(ws / "data" / "sample_submission.csv", index=False)
    comp = yaml.safe_load((ws / "comp.yaml").read_text())
    comp["data"]["bbox_cols"] = ["x0", "y0", "x1", "y1"]
    comp["submission"] = {"id_col": "ImageID", "target_col": "ans", "kind": "probabilities",
                          "sample_csv": "data/sample_submission.csv"}
    (ws / "comp.yaml").write_text(yaml.safe_dump(comp))
    return ws


def test_rank_blend_of_boxes_and_crops_in_probability_format(make_ws, tmp_path, bare_python, one_torch_thread):
    ws = box_workspace(make_ws)
    fake_member(ws, "crops", member_spec(tta__transforms="ten_crop", image__bbox_margin=0.2), seed=1)
    fake_member(ws, "scales", member_spec(tta__transforms="multiscale", augment__preset="none"), seed=2)
    made = invoke(ws, "ensemble", "-e", "crops", "-e", "scales", "--method", "rank", "--weights", "0.3,0.7", "--name", "ranked")
    assert made.exit_code == 0, made.output
    exported = invoke(ws, "export", "ranked", "--to", str(tmp_path / "b"), "--check", "3")
    assert exported.exit_code == 0, exported.output
    doc = read_json(tmp_path / "b" / "bundle.json")
    assert doc["submission"]["columns"] == ["c2", "c0", "c1"] and doc["test"]["bbox_cols"] == ["x0", "y0", "x1", "y1"]
    out = tmp_path / "sub.csv"
    done = run_bundle(bare_python, tmp_path / "b", tmp_path, "--images", str(ws / "data" / "images"),
                      "--csv", str(ws / "data" / "test.csv"), "--sample", str(ws / "data" / "sample_submission.csv"),
                      "--out", str(out), "--device", "cpu", "--probs", str(tmp_path / "probs"))
    assert done.returncode == 0, done.stderr
    assert_parity(ws, "ranked", out, ["crops", "scales"], tmp_path / "probs")


def test_experiment_bundle_with_onnx(tiny_ws, tmp_path, bare_python, one_torch_thread):
    pytest.importorskip("onnx", reason="onnx is not installed (pip install 'comp[export]')")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'comp[export]')")
    fake_member(tiny_ws, "solo", member_spec(tta__transforms="five_crop"), seed=4)
    assert invoke(tiny_ws, "predict", "-e", "solo").exit_code == 0
    exported = invoke(tiny_ws, "export", "solo", "--to", str(tmp_path / "b"), "--onnx")
    assert exported.exit_code == 0, exported.output
    assert "ONNX: onnxruntime matches torch" in exported.output
    import onnx

    graph = onnx.load(str(tmp_path / "b" / "solo.fold0.onnx"))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a dynamic batch
    doc = read_json(tmp_path / "b" / "bundle.json")
    onnx_diff = max(doc["members"][0]["onnx_max_abs_diff"].values())
    print(f"onnxruntime vs torch at export: {onnx_diff:.3g}")  # shown with pytest -s
    assert doc["source"]["kind"] == "experiment" and onnx_diff <= 1e-4
    args = ["--images", str(tiny_ws / "data" / "images"), "--csv", str(tiny_ws / "data" / "test.csv"), "--device", "cpu"]
    for runtime in ("torch", "onnx"):
        done = run_bundle(bare_python, tmp_path / "b", tmp_path, *args, "--out", str(tmp_path / f"{runtime}.csv"),
                          "--runtime", runtime, "--probs", str(tmp_path / runtime))
        assert done.returncode == 0, done.stderr
    want = pd.read_csv(tiny_ws / "experiments" / "solo" / "test.csv", dtype={"id": str})
    for runtime, tol in (("torch", 1e-5), ("onnx", 1e-4)):
        got = pd.read_csv(tmp_path / runtime / "solo.csv", dtype={"id": str})
        assert got["id"].tolist() == want["id"].tolist()
        diff = np.abs(got.filter(like="p_").to_numpy() - want.filter(like="p_").to_numpy()).max()
        print(f"{runtime}: bundle vs comp, max abs probability difference {diff:.3g}")  # shown with pytest -s
        assert diff <= tol
    assert (tmp_path / "torch.csv").read_text().splitlines()[0] == "ImageID,ans"


def test_export_refuses_what_it_cannot_reproduce(tiny_ws, tmp_path, one_torch_thread):
    fake_member(tiny_ws, "m", member_spec(), seed=1)
    never = invoke(tiny_ws, "export", "m", "--to", str(tmp_path / "a"))
    assert never.exit_code == 2 and "no complete test predictions" in never.output and "comp predict -e m" in never.output
    assert invoke(tiny_ws, "ensemble", "-e", "m", "--name", "s").exit_code == 0
    unknown = invoke(tiny_ws, "export", "nope", "--to", str(tmp_path / "a"))
    assert unknown.exit_code == 2 and "neither a submission nor a trained experiment" in unknown.output

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    busy = invoke(tiny_ws, "export", "s", "--to", str(tmp_path / "full"), "--force", "--check", "0")
    assert busy.exit_code == 2 and "holds no bundle.json" in busy.output

    sub = tiny_ws / "submissions" / "s.csv"
    original = sub.read_text()
    sub.write_text(original.replace(",c0\n", ",c1\n").replace(",c2\n", ",c0\n"))
    edited = invoke(tiny_ws, "export", "s", "--to", str(tmp_path / "a"), "--check", "0")
    assert edited.exit_code == 2 and "is not what its members' current test predictions give" in edited.output
    assert not (tmp_path / "a").exists() and not list(tmp_path.glob(".a.*"))  # nothing half-written
    sub.write_text(original)

    ok = invoke(tiny_ws, "export", "s", "--to", str(tmp_path / "a"), "--check", "0")
    assert ok.exit_code == 0, ok.output
    again = invoke(tiny_ws, "export", "s", "--to", str(tmp_path / "a"), "--check", "0")
    assert again.exit_code == 2 and "--force" in again.output
    assert invoke(tiny_ws, "export", "s", "--to", str(tmp_path / "a"), "--check", "0", "--force").exit_code == 0

    ckpt = tiny_ws / "experiments" / "m" / "fold1" / "best.pt"
    later = ckpt.stat().st_mtime + 10
    os.utime(ckpt, (later, later))  # a new mtime alone (a copy) is the same checkpoint: judged by content
    assert invoke(tiny_ws, "export", "s", "--to", str(tmp_path / "b"), "--check", "0").exit_code == 0
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # other bytes, same size
    stale = invoke(tiny_ws, "export", "s", "--to", str(tmp_path / "b2"))
    assert stale.exit_code == 2 and "checkpoints changed since its test predictions were made" in stale.output
    ckpt.unlink()
    gone = invoke(tiny_ws, "export", "s", "--to", str(tmp_path / "b3"))
    assert gone.exit_code == 2 and "fold1/best.pt is missing" in gone.output
    bad_id = invoke(tiny_ws, "export", "m", "--to", str(tmp_path / "c"), "--dataset-id", "Bad Slug")
    assert bad_id.exit_code == 2


def test_bundle_with_weights_that_are_not_safetensors_ends_in_one_error_line(tiny_ws, tmp_path, bare_python,
                                                                            one_torch_thread):
    """predict.py itself, run where comp is not importable, on a weights file replaced by a torch pickle: exit 2 and
    one `error:` line naming the file and saying to re-export (not safetensors' raw traceback)."""
    fake_member(tiny_ws, "m", member_spec(), seed=1)
    assert invoke(tiny_ws, "ensemble", "-e", "m", "--name", "s").exit_code == 0
    exported = invoke(tiny_ws, "export", "s", "--to", str(tmp_path / "b"), "--check", "0")
    assert exported.exit_code == 0, exported.output
    torch.save({"w": torch.zeros(2)}, tmp_path / "b" / "m.fold0.safetensors")  # a torch file where safetensors belongs
    done = run_bundle(bare_python, tmp_path / "b", tmp_path, "--images", str(tiny_ws / "data" / "images"),
                      "--csv", str(tiny_ws / "data" / "test.csv"), "--out", str(tmp_path / "sub.csv"), "--device", "cpu")
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr
    assert "m.fold0.safetensors is not a safetensors weights file" in errors[0] and "re-export" in errors[0], errors
    assert "Traceback" not in done.stderr and not (tmp_path / "sub.csv").exists()


def test_bundle_code_matches_comp_step_by_step(tmp_path):
    """Drift guard: each step of predict.py against the comp function it copies."""
    import albumentations  # noqa: F401  (comp's eval pipeline)

    from comp.core.config import Config
    from comp.data.augment import build_eval_transform
    from comp.data.cache import load_image
    from comp.blend.ensemble import apply_bias, blend
    from comp.export import bundle_predict as bp
    from comp.infer.predict import CROP, MULTISCALE, TTA_NAMES, build_tta

    rng = np.random.default_rng(0)
    probs = [rng.dirichlet(np.ones(4), size=30) for _ in range(3)]
    probs[0][:5] = probs[0][0]  # ties for the rank blend
    for method in ("mean", "geometric", "rank", "vote"):
        np.testing.assert_array_equal(bp.blend(probs, [0.2, 0.5, 0.3], method), blend(probs, [0.2, 0.5, 0.3], method=method))
    bias = np.array([0.25, -0.5, 0.0, 1.0])
    np.testing.assert_array_equal(bp.apply_bias(probs[0], list(bias)), apply_bias(probs[0], bias))

    x = torch.randn(2, 3, 24, 20)
    for name in TTA_NAMES:
        ours = bp.tta_views({"name": name, "crop": CROP, "scales": list(MULTISCALE)}, (24, 20))
        theirs = list(build_tta(name, size=(24, 20)))
        assert len(ours) == len(theirs), name
        for a, b in zip(ours, theirs):
            assert torch.equal(a(x), b.augment_image(x)), name

    from PIL import Image

    img = rng.integers(0, 255, (50, 37, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    cfg = Config.model_validate({"image": {"size": [20, 18], "bbox_margin": 0.15, "cache_scale": 1.14},
                                 "model": {"name": "test_resnet"}})
    box = np.array([3.0, 5.0, 30.0, 41.0])
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    want = build_eval_transform(cfg.image, cfg.augment, mean, std)(image=load_image(str(tmp_path / "a.png"), box, hw=(23, 21), margin=0.15))["image"]
    pre = {"cache_hw": [23, 21], "input_hw": [20, 18], "bbox_margin": 0.15, "mean": mean, "std": std}
    got = bp.prepare(str(tmp_path / "a.png"), box, pre, fractional=False)
    assert np.array_equal(got, want.numpy())


def test_notebook_and_dataset_metadata():
    from comp.core.errors import CompError
    from comp.export.kaggle_files import dataset_metadata, dataset_slug, notebook

    assert dataset_slug("b") == "b-bundle" and len(dataset_slug("x" * 80)) <= 50
    assert dataset_metadata("blend1", None)["id"] == "INSERT_KAGGLE_USERNAME/blend1-bundle"
    with pytest.raises(CompError, match="OWNER/SLUG"):
        dataset_metadata("blend1", "alice/No")
    nb = notebook(bundle_dir="/kaggle/input/b", images="/kaggle/input/c/test", csv="/kaggle/input/c/sample_submission.csv")
    assert nb["nbformat"] == 4 and json.loads(json.dumps(nb))["cells"][1]["cell_type"] == "code"
    source = "".join(nb["cells"][2]["source"])
    assert "predict.py" in source and "--images" in source

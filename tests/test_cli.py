"""The ``fvstudio`` command: run, sweep (+ Table-1 preset), config errors, Ctrl-C."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fvstudio.cli import main

TINY = """\
[dataset]
root = "{root}"
train_list = "train.txt"
test_list = "test.txt"
max_pixels = 20000

[descriptors]
channels = ["sift"]
scales = 1
step = 6

[pca]
n_components = 16
sample = 5000

[gmm]
n_components = 4
sample = 5000
max_iter = 20

[encoder]
kind = "fisher"

[classifier]
lam_grid = [1e-4, 1e-3]
epochs = 5
"""

CLASSES = ("bricks", "rust", "spots", "waves")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, sample_data_dir):
    src = Path(sample_data_dir) / "textures"
    if not src.is_dir():
        pytest.skip("sample_data/textures is not there")
    base = tmp_path_factory.mktemp("cli")
    root = base / "scenes"
    train, test = [], []
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for j, f in enumerate(sorted((src / cls).iterdir())[:7]):
            shutil.copy(f, root / cls / f.name)
            (train if j < 4 else test).append(f"{cls}/{f.name}")
    (base / "train.txt").write_text("\n".join(train) + "\n")
    (base / "test.txt").write_text("\n".join(test) + "\n")
    cfg = base / "tiny.toml"
    cfg.write_text(TINY.format(root="scenes"))  # relative to the config file
    return base, cfg


def test_run_writes_results_and_predictions(tiny, capsys):
    base, cfg = tiny
    out = base / "out"
    assert main(["run", str(cfg), "--out", str(out), "--workspace", str(base / "ws")]) == 0
    doc = json.loads((out / "results.json").read_text())
    for key in ("mean_per_class_accuracy", "accuracy", "top5_accuracy"):
        assert 0.0 <= doc[key] <= 1.0 and doc["metrics"][key] == doc[key]
    assert set(doc["per_class"]) == set(CLASSES)
    assert set(doc["timings"]) == {"descriptors", "pca", "gmm", "encode", "compress", "classifier", "evaluate"}
    assert all(isinstance(v, float) and v >= 0 for v in doc["timings"].values())
    assert doc["config"]["gmm"]["n_components"] == 4
    assert doc["config"]["encoder"]["power"] == 0.5  # unspecified key resolved to its default
    assert doc["config"]["dataset"]["root"] == str((base / "scenes").resolve())
    assert {"fvstudio", "numpy", "numba"} <= set(doc["versions"])
    assert len(doc["confusion"]) == 4 and sum(map(sum, doc["confusion"])) == 12
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12
    assert list(rows[0])[:4] == ["split", "id", "true", "predicted"]
    assert {f"score_{c}" for c in CLASSES} <= set(rows[0])
    acc = np.mean([r["true"] == r["predicted"] for r in rows])
    assert acc == pytest.approx(doc["accuracy"])
    # the scores in the CSV agree with the predicted class
    for r in rows:
        scores = {c: float(r[f"score_{c}"]) for c in CLASSES}
        assert max(scores, key=scores.get) == r["predicted"]
    # a second run hits every cache and reproduces the numbers
    out2 = base / "out2"
    assert main(["run", str(cfg), "--out", str(out2), "--workspace", str(base / "ws"), "-q"]) == 0
    doc2 = json.loads((out2 / "results.json").read_text())
    assert doc2["metrics"] == doc["metrics"]
    assert doc2["cached_steps"] == ["descriptors", "pca", "gmm", "encode", "compress", "classifier", "evaluate"]


def test_sweep_writes_table_and_plot(tiny):
    base, cfg = tiny
    out = base / "sweep"
    assert main(["sweep", str(cfg), "--set", "gmm.n_components=2,4", "--set", "classifier.epochs=3",
                 "--out", str(out), "--workspace", str(base / "ws"), "-q"]) == 0
    with open(out / "sweep.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["gmm.n_components"] for r in rows] == ["2", "4"]
    assert all(0 <= float(r["mean_per_class_accuracy"]) <= 1 for r in rows)
    # descriptors and PCA are shared by both variants (computed once, by the run test or variant 1)
    assert "descriptors" in rows[1]["cached_steps"] and "pca" in rows[1]["cached_steps"]
    png = (out / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert len(list((out / "runs").glob("*/results.json"))) == 2


def test_sweep_as_a_process_exits_cleanly(tiny):
    """The chart is drawn from the sweep's worker thread; the process must exit cleanly (with the old
    QPainter charts it crashed with SIGSEGV at exit after writing its files)."""
    base, cfg = tiny
    out = base / "sweep_proc"
    proc = subprocess.run([sys.executable, "-m", "fvstudio", "sweep", str(cfg), "--set", "gmm.n_components=2,4",
                           "--set", "classifier.epochs=3", "--out", str(out), "--workspace", str(base / "ws"),
                           "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "sweep.png").stat().st_size > 5_000


# Run before anything else in a fresh interpreter: every import of PySide6 (hence of Qt) then fails.
_NO_QT = "import sys\nsys.modules['PySide6'] = None\n"


def test_sweep_writes_its_chart_without_qt(tiny):
    """``fvstudio sweep`` with PySide6 unimportable: the headless command never needs a Qt application."""
    base, cfg = tiny
    out = base / "sweep_no_qt"
    code = _NO_QT + "from fvstudio.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    proc = subprocess.run([sys.executable, "-c", code, "sweep", str(cfg), "--set", "gmm.n_components=2,4",
                           "--out", str(out), "--workspace", str(base / "ws"), "-q"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    png = (out / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000


def test_chart_is_drawn_from_a_worker_thread_without_qt(tmp_path):
    """In a fresh process without Qt, both chart styles are drawn from a worker thread (no crash, no error)."""
    code = _NO_QT + (
        "import threading\n"
        "from fvstudio.pipeline.plot import category_chart_png\n"
        "errors = []\n"
        "def job(style):\n"
        "    try:\n"
        "        category_chart_png(sys.argv[1] + f'/{style}.png', ['a', 'b', 'c'],\n"
        "                           {'x': [0.5, None, 0.7], 'y': [0.4, 0.6, 0.65]},\n"
        "                           errors={'x': [0.02, None, 0.05]}, style=style, title='t', xlabel='k', ylabel='%')\n"
        "    except Exception as exc:\n"
        "        errors.append(repr(exc))\n"
        "threads = [threading.Thread(target=job, args=(s,)) for s in ('line', 'bar')]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "print(errors or 'ok', 'Qt loaded' if any(m.startswith('PySide6.') for m in sys.modules) else 'no Qt')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["ok", "no", "Qt"], proc.stdout
    for style in ("line", "bar"):
        assert (tmp_path / f"{style}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _preset_sweep(tiny, name):
    """Run ``fvstudio sweep --preset name`` on the tiny config: (its sweep.csv rows, the output folder)."""
    base, cfg = tiny
    out = base / name
    assert main(["sweep", str(cfg), "--preset", name, "--out", str(out), "--workspace", str(base / "ws"),
                 "-q"]) == 0
    with open(out / "sweep.csv", newline="") as fh:
        return list(csv.DictReader(fh)), out


def test_table1_preset_runs_eight_variants(tiny):
    rows, out = _preset_sweep(tiny, "table1")
    assert [r["label"] for r in rows] == ["none", "PN", "L2", "SP", "PN+L2", "PN+SP", "L2+SP", "PN+L2+SP"]
    none = rows[0]
    assert none["encoder.power"] == "0" and none["encoder.lp"] == "0" and none["encoder.pyramid"] == "1x1"
    # the paper's setup: no position augmentation and no zeroed low-contrast SIFT, although the defaults have both
    assert all(r["gmm.position_scale"] == "0" and r["descriptors.contrast_threshold"] == "0" for r in rows)
    # all eight share descriptors, PCA and GMM
    assert all({"descriptors", "pca", "gmm"} <= set(r["cached_steps"].split("+")) for r in rows[1:])
    assert (out / "sweep.png").stat().st_size > 5_000


def test_findings_preset_compares_bov_raw_sift_and_the_empirical_fim(tiny):
    listed, out = _preset_sweep(tiny, "findings")
    rows = {r["label"]: r for r in listed}
    assert list(rows) == ["FV", "soft-BoV", "no PCA", "empirical FIM"]
    assert all(r["gmm.position_scale"] == "0" and r["descriptors.contrast_threshold"] == "0" for r in listed)
    assert rows["soft-BoV"]["encoder.kind"] == "soft_bow" and rows["empirical FIM"]["encoder.fim"] == "empirical"
    # soft-BoV and the empirical FIM re-use the defaults' GMM; no PCA re-uses only the descriptors
    for label in ("soft-BoV", "empirical FIM"):
        assert {"descriptors", "pca", "gmm"} <= set(rows[label]["cached_steps"].split("+"))
    raw = set(rows["no PCA"]["cached_steps"].split("+"))
    assert "descriptors" in raw and "gmm" not in raw
    # bytes per image: per region the FV is 2 x D x K (TINY: SIFT, PCA to D = 16), soft-BoV K, no PCA 2 x 128 x K
    fv, bov, rawb = (float(rows[k]["bytes_per_image"]) for k in ("FV", "soft-BoV", "no PCA"))
    assert fv == 2 * 16 * bov and rawb == (128 // 16) * fv
    for label in rows:
        assert 0.0 < float(rows[label]["mean_per_class_accuracy"]) <= 1.0
    assert (out / "sweep.png").stat().st_size > 5_000


@pytest.mark.parametrize("text, needle", [
    ('[gmm]\nn_components = "many"\n', "gmm.n_components"),
    ('[encoder]\nkind = "bow"\n', "encoder.kind"),
    ('[dataset]\nroot = "does-not-exist"\n', "dataset.root"),
])
def test_bad_config_exits_2_naming_the_key(tmp_path, capsys, text, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--workspace", str(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "error" in err


def test_bad_set_value_is_named(tiny, capsys):
    base, cfg = tiny
    assert main(["sweep", str(cfg), "--set", "gmm.n_components=4,0", "--out", str(base / "x")]) == 2
    assert "gmm.n_components" in capsys.readouterr().err


def test_a_list_key_given_with_commas_to_run_says_how_to_join_it(tiny, capsys):
    base, cfg = tiny
    assert main(["config", str(cfg), "--set", "descriptors.channels=sift,lcs"]) == 2
    err = capsys.readouterr().err
    assert "descriptors.channels" in err and "sift+lcs" in err
    assert main(["config", str(cfg), "--set", "descriptors.channels=sift+lcs"]) == 0
    assert '"lcs"' in capsys.readouterr().out


def test_no_arguments_opens_the_gui(monkeypatch):
    import types

    calls = []
    fake = types.ModuleType("fvstudio.gui.app")
    fake.run_gui = lambda **kw: calls.append(kw) or 0
    monkeypatch.setitem(sys.modules, "fvstudio.gui.app", fake)
    assert main([]) == 0
    assert main(["gui", "--panel", "results", "--screenshot", "x.png"]) == 0
    assert calls[0] == {"workspace": None, "screenshot": None, "panel": None}
    assert calls[1]["panel"] == "results" and str(calls[1]["screenshot"]) == "x.png"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT delivery differs on Windows")
def test_ctrl_c_exits_130_and_rerun_matches(tiny, tmp_path):
    base, cfg = tiny
    # slow enough that the interrupt lands mid-run: more scales and more Gaussians
    text = cfg.read_text().replace("scales = 1", "scales = 3").replace("n_components = 4", "n_components = 16")
    slow = base / "slow.toml"
    slow.write_text(text)
    ws, out = tmp_path / "ws", tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fvstudio", "run", str(slow), "--out", str(out),
                             "--workspace", str(ws)], stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                            text=True)
    buf = ""
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until the descriptor step is under way
        ch = proc.stderr.read(1)
        if not ch:
            break
        buf += ch
        if "descriptors" in buf and "[" in buf.split("descriptors")[-1]:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, buf + err
    assert "cancelled" in err
    assert not (out / "results.json").exists()
    assert [p for p in ws.rglob("*") if ".tmp" in p.name] == []
    assert main(["run", str(slow), "--out", str(out), "--workspace", str(ws), "-q"]) == 0
    assert main(["run", str(slow), "--out", str(tmp_path / "fresh"), "--workspace", str(tmp_path / "ws2"),
                 "-q"]) == 0
    a = json.loads((out / "results.json").read_text())
    b = json.loads((tmp_path / "fresh" / "results.json").read_text())
    assert a["metrics"] == b["metrics"]

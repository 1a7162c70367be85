"""The streaming path (descriptors.keep = "vocabulary") and the chunked FV store: same results as storing
every descriptor, only the vocabulary images' descriptors on disk, cancel / kill / resume of the encode."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fvstudio.pipeline import CancelToken, Cancelled, Pipeline, PipelineConfig

@pytest.fixture(scope="module")
def dataset(textures_24):
    return textures_24


def _config(root, **extra):
    c = PipelineConfig()
    c.update({"dataset.root": str(root), "dataset.n_train": 3, "dataset.max_pixels": 20_000,
              "descriptors.scales": 1, "descriptors.step": 6, "descriptors.vocab_images": 5,
              "pca.n_components": 16, "pca.sample": 4_000, "gmm.n_components": 4, "gmm.sample": 4_000,
              "gmm.max_iter": 20, "classifier.select_lambda": False, "classifier.epochs": 5,
              "descriptors.channels": ["sift"], **extra})
    return c


@pytest.fixture(scope="module")
def streamed(dataset, tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws_stream")
    pipe = Pipeline(_config(dataset), ws)
    res = pipe.run_all()
    return pipe, res, ws


def test_streaming_equals_storing_every_descriptor_bit_for_bit(dataset, streamed, tmp_path):
    pipe, res, ws = streamed
    full = Pipeline(_config(dataset, **{"descriptors.keep": "all"}), tmp_path / "ws")
    res_full = full.run_all()
    assert res.metrics == res_full.metrics
    a = np.asarray(pipe.artifact("encode", "sift").fvs)
    b = np.asarray(full.artifact("encode", "sift").fvs)
    assert a.shape == (24, 2 * (16 + 2) * 4 * 4) and np.array_equal(a, b)  # D = 16 PCA dims + 2 coordinates
    # the keep mode changes how, not what: the same keys, so either run reuses the other's cache
    assert pipe.keys() == full.keys()


def test_only_the_vocabulary_images_descriptors_are_stored(streamed):
    pipe, _, ws = streamed
    ctx = pipe.context()
    vocab = ctx.vocab_indices(0)
    assert len(vocab) == 5 and set(vocab) <= set(ctx.fit_indices(0))
    store = ctx.stores["sift"]
    npys = list(store.folder.glob("images/*.npy"))
    jsons = list(store.folder.glob("images/*.json"))
    assert len(npys) == 5 and len(jsons) == 24
    assert store.stored(ctx.split_indices(0)).sum() == 5
    # and of those, only the rows their vocabulary sample can draw (256 a picture), not every descriptor
    import json as _json

    entries = [_json.loads(p.read_text()) for p in jsons]
    kept = [e for e in entries if e.get("stored", True)]
    assert len(kept) == 5 and all(e["n_rows"] == 256 < e["n"] for e in kept)
    assert all(p.stat().st_size < 256 * 600 for p in npys)
    # what is kept of an image the vocabulary does not use: its entry, a few hundred bytes
    sizes = [p.stat().st_size for p in jsons]
    assert max(sizes) < 400


def test_a_probed_image_changed_after_probing_is_refused_by_name(dataset, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(dataset, root)
    pipe = Pipeline(_config(root), tmp_path / "ws")
    pipe.run_step("descriptors")
    ctx = pipe.context()
    store = ctx.stores["sift"]
    i = int(np.flatnonzero(~store.stored(np.arange(len(ctx.ids))))[0])
    path = Path(ctx.dataset.paths[i])
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: only the bytes tell
    with pytest.raises(ValueError, match="bytes of .* changed since it was probed"):
        store.get(i)


def test_an_unreadable_image_is_left_out_of_a_streaming_run(dataset, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(dataset, root)
    bad = sorted((root / "rust").iterdir())[-1]
    bad.write_bytes(b"")
    pipe = Pipeline(_config(root), tmp_path / "ws")
    res = pipe.run_all()
    ctx = pipe.context()
    assert [ctx.ids[i] for i in ctx.left_out] == [f"rust/{bad.name}"]
    assert len(pipe.artifact("encode", "sift").indices) == 23
    assert res.extra["failed_images"]["count"] == 1


def test_cancel_in_the_middle_of_an_encode_keeps_its_blocks_and_the_resume_equals_a_fresh_run(
        dataset, streamed, tmp_path, monkeypatch):
    from fvstudio.pipeline.steps import encode

    monkeypatch.setattr(encode, "BLOCK", 4)
    cfg = _config(dataset, **{"encoder.power": 0.3})  # a new encode over the cached vocabulary
    ws = tmp_path / "ws"
    shutil.copytree(streamed[2], ws)
    token = CancelToken()
    seen = []

    def progress(p):
        msg = p.message or ""
        if p.values.get("step") == "encode" and "images" in msg and msg.startswith("encode[sift]: 8/"):
            seen.append(msg)
            token.cancel()

    pipe = Pipeline(cfg, ws)
    with pytest.raises(Cancelled):
        pipe.run_all(progress=progress, cancel=token)
    key = pipe.keys()["encode"]["sift"][0]
    chunks = sorted(p.parent.name for p in (ws / "steps" / "encode" / key / "fvs.zarr" / "c").glob("*/0"))
    assert seen and chunks == ["0", "1"]
    messages = []
    again = Pipeline(cfg, ws)
    again.run_step("encode", progress=lambda p: messages.append(p.message or ""))
    assert any("resuming, 2 of 6 blocks kept" in m for m in messages)
    fresh = Pipeline(cfg, tmp_path / "fresh")
    fresh.run_step("encode")
    assert np.array_equal(np.asarray(again.artifact("encode", "sift").fvs),
                          np.asarray(fresh.artifact("encode", "sift").fvs))


KILLER = r"""
import os, sys
from fvstudio.pipeline import Pipeline, PipelineConfig
from fvstudio.pipeline.steps import encode
encode.BLOCK = 4
cfg = PipelineConfig.from_toml(sys.argv[1])
def progress(p):
    if (p.message or "").startswith("encode[sift]: 12/"):
        os._exit(9)  # dies like a kill: no cleanup, no exception handlers
Pipeline(cfg, sys.argv[2]).run_step("encode", progress=progress)
"""


@pytest.mark.slow
def test_a_killed_encode_resumes_from_its_chunks(dataset, streamed, tmp_path):
    cfg = _config(dataset, **{"encoder.power": 0.4})
    toml = tmp_path / "c.toml"
    toml.write_text(cfg.to_toml_string())
    ws = tmp_path / "ws"
    shutil.copytree(streamed[2], ws)
    proc = subprocess.run([sys.executable, "-c", KILLER, str(toml), str(ws)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 9, proc.stderr
    pipe = Pipeline(cfg, ws)
    key = pipe.keys()["encode"]["sift"][0]
    zdir = ws / "steps" / "encode" / key / "fvs.zarr"
    assert sorted(p.parent.name for p in zdir.glob("c/*/0")) == ["0", "1", "2"]
    assert not (zdir.parent / "manifest.json").exists()
    messages = []
    import fvstudio.pipeline.steps.encode as encode

    old = encode.BLOCK
    encode.BLOCK = 4
    try:
        pipe.run_step("encode", progress=lambda p: messages.append(p.message or ""))
    finally:
        encode.BLOCK = old
    assert any("resuming, 3 of 6 blocks kept" in m for m in messages)
    fresh = Pipeline(cfg, tmp_path / "fresh")
    fresh.run_step("encode")
    assert np.array_equal(np.asarray(pipe.artifact("encode", "sift").fvs),
                          np.asarray(fresh.artifact("encode", "sift").fvs))


def test_float16_storage_gives_the_same_fvs_stored_or_streamed(dataset, tmp_path):
    kw = {"descriptors.dtype": "float16"}
    a = Pipeline(_config(dataset, **kw), tmp_path / "a")
    a.run_step("encode")
    b = Pipeline(_config(dataset, **kw, **{"descriptors.keep": "all"}), tmp_path / "b")
    b.run_step("encode")
    assert np.array_equal(np.asarray(a.artifact("encode", "sift").fvs), np.asarray(b.artifact("encode", "sift").fvs))
    store = b.context().stores["sift"]
    assert store.descriptor_dtype == "float16"


@pytest.mark.slow
def test_a_dask_run_equals_the_local_run_bit_for_bit(dataset, streamed, tmp_path):
    pipe, res, _ = streamed
    cfg = _config(dataset, **{"compute.scheduler": "dask", "compute.n_workers": 2})
    dask_pipe = Pipeline(cfg, tmp_path / "ws")
    dres = dask_pipe.run_all()
    assert dres.metrics == res.metrics
    assert np.array_equal(np.asarray(dask_pipe.artifact("encode", "sift").fvs),
                          np.asarray(pipe.artifact("encode", "sift").fvs))


@pytest.mark.slow
def test_a_dask_worker_killed_in_the_middle_of_the_encode_changes_nothing(dataset, streamed, tmp_path, monkeypatch):
    import signal
    import threading
    import time

    import psutil

    from fvstudio.pipeline.steps import encode

    monkeypatch.setattr(encode, "BLOCK", 2)  # 12 blocks: the kill lands while most are still to do
    cfg = _config(dataset, **{"compute.scheduler": "dask", "compute.n_workers": 2, "descriptors.scales": 3})
    ws = tmp_path / "ws"
    pipe = Pipeline(cfg, ws)
    pipe.run_step("gmm")
    key = pipe.keys()["encode"]["sift"][0]
    chunks = ws / "steps" / "encode" / key / "fvs.zarr" / "c"
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    outcome = {}

    def run():
        try:
            pipe.run_step("encode")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    killed = None
    deadline = time.monotonic() + 120
    while worker.is_alive() and time.monotonic() < deadline and killed is None:
        if chunks.is_dir() and any(chunks.glob("*/0")):
            workers = [p for p in psutil.Process().children(recursive=True)  # the worker processes, not
                       if p.pid not in before and "spawn_main" in " ".join(p.cmdline())]  # the resource tracker
            if workers:
                left = 12 - len(list(chunks.glob("*/0")))
                workers[0].send_signal(signal.SIGKILL)
                killed = (workers[0].pid, left)
        time.sleep(0.002)
    worker.join(300)
    assert "error" not in outcome, outcome
    assert killed is not None and killed[1] > 0, "the encode finished before a worker could be killed"
    assert pipe.status("encode") == "cached"
    threads = Pipeline(_config(dataset, **{"descriptors.scales": 3}), tmp_path / "threads")
    monkeypatch.setattr(encode, "BLOCK", 2)
    threads.run_step("encode")
    assert np.array_equal(np.asarray(pipe.artifact("encode", "sift").fvs),
                          np.asarray(threads.artifact("encode", "sift").fvs))


def test_pq_codes_live_in_chunks_and_a_lost_chunk_is_recomputed(dataset, streamed, tmp_path):
    cfg = _config(dataset, **{"compression.bits_per_dim": 1.0, "compression.group": 4})
    ws = tmp_path / "ws"
    shutil.copytree(streamed[2], ws)
    pipe = Pipeline(cfg, ws)
    first = pipe.run_all()
    key = pipe.keys()["compress"]["sift"][0]
    folder = ws / "steps" / "compress" / key
    assert (folder / "codes.zarr").is_dir() and (folder / "mask.zarr").is_dir()
    assert not (folder / "codes.npz").exists()
    (folder / "codes.zarr" / "c" / "0" / "0").unlink()
    again = Pipeline(cfg, ws)
    assert again.status("compress") != "cached"
    res = again.run_all()
    assert again.computed["compress"] == 1 and again.computed["encode"] == 0
    assert res.metrics == first.metrics and res.compression == first.compression

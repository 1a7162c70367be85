"""A damaged or half-written workspace is detected, recomputed and said so; the CLI checks its folders."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fvstudio.cli import main
from fvstudio.pipeline import Pipeline, PipelineConfig


@pytest.fixture(scope="module")
def config(textures_24):
    root = textures_24
    c = PipelineConfig()
    c.update({"dataset.root": str(root), "dataset.n_train": 3, "dataset.max_pixels": 20_000,
              "descriptors.scales": 1, "descriptors.step": 6, "pca.n_components": 16, "pca.sample": 5_000,
              "gmm.n_components": 4, "gmm.sample": 5_000, "gmm.max_iter": 20, "classifier.select_lambda": False,
              "classifier.epochs": 5})
    return c


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    return ws, Pipeline(config, ws).run_all().metrics


@pytest.mark.parametrize("step, name, damage", [("gmm", "gmm.npz", "truncate"), ("gmm", "gmm.npz", "garble"),
                                                ("encode", "indices.npy", "garble"),
                                                ("classifier", "scores.npz", "garble")])
def test_damaged_step_output_is_recomputed_with_a_warning(config, reference, tmp_path, step, name, damage):
    src, metrics = reference
    ws = tmp_path / "ws"
    shutil.copytree(src, ws)
    pipe = Pipeline(config, ws)
    key = pipe.keys()[step]
    key = key["sift"][0] if isinstance(key, dict) else key
    path = ws / "steps" / step / key / name
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
        path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=f"{name} is damaged"):
        assert pipe.status(step) != "cached"
    assert pipe.run_all().metrics == metrics
    assert pipe.computed[step] == 1 and pipe.status(step) == "cached"


def test_orphan_temporaries_of_a_killed_step_are_removed(config, tmp_path):
    ws = tmp_path / "ws"
    pipe = Pipeline(config, ws)
    pipe.run_step("gmm")
    key = pipe.keys()["encode"]["sift"][0]
    from fvstudio.engine import serialization

    dead = 2 ** 22 + 12345  # above the usual pid_max of 4194304 -> no such process
    orphan = ws / "steps" / "encode" / key / f".fvs.npy.{serialization._HOST_TAG}-{dead}.abc123.tmp.npy"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"x" * 1000)
    Pipeline(config, ws).run_step("encode")
    assert not orphan.exists()


def test_disk_full_during_encode_is_one_line_naming_the_file_and_resume_works(config, tmp_path, monkeypatch,
                                                                              capsys):
    toml = tmp_path / "c.toml"
    toml.write_text(config.to_toml_string())
    ws, out = tmp_path / "ws", tmp_path / "out"

    from fvstudio.pipeline.steps import encode

    monkeypatch.setattr(encode, "free_bytes", lambda folder: 1000)
    assert main(["run", str(toml), "--out", str(out), "--workspace", str(ws), "-q"]) == 1
    err = capsys.readouterr().err
    assert "no space left on the disk holding" in err and str(ws) in err and "fvs.zarr" in err
    assert len(err.strip().splitlines()) == 1
    monkeypatch.undo()
    assert main(["run", str(toml), "--out", str(out), "--workspace", str(ws), "-q"]) == 0
    assert (out / "results.json").is_file()


@pytest.mark.parametrize("option", ["--out", "--workspace"])
def test_output_folders_are_checked_before_anything_runs(config, tmp_path, capsys, option):
    toml = tmp_path / "c.toml"
    toml.write_text(config.to_toml_string())
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    args = {"--out": str(tmp_path / "out"), "--workspace": str(tmp_path / "ws")}
    args[option] = str(a_file)
    assert main(["run", str(toml), "--out", args["--out"], "--workspace", args["--workspace"], "-q"]) == 2
    err = capsys.readouterr().err
    assert f"{option} {a_file}: exists and is not a folder" in err
    assert not (tmp_path / "ws" / "steps").exists()


def _copied_run(reference, config, tmp_path):
    """A copy of the reference workspace, its pipeline, its FVs and the path of their first chunk."""
    ws = tmp_path / "ws"
    shutil.copytree(reference[0], ws)
    pipe = Pipeline(config, ws)
    key = pipe.keys()["encode"]["sift"][0]
    return ws, pipe, np.asarray(pipe.artifact("encode", "sift").fvs), ws / "steps" / "encode" / key / "fvs.zarr" / "c" / "0" / "0"


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_missing_or_cut_fv_chunk_is_recomputed_alone_with_a_warning(config, reference, tmp_path, damage):
    ws, pipe, before, chunk = _copied_run(reference, config, tmp_path)
    if damage == "truncate":
        chunk.write_bytes(chunk.read_bytes()[:100])
    else:
        chunk.unlink()
    with pytest.warns(UserWarning, match=r"blocks \[0\] are missing or damaged"):
        assert pipe.status("encode") != "cached"
    pipe.run_step("encode")
    assert pipe.status("encode") == "cached" and chunk.is_file()
    assert np.array_equal(np.asarray(Pipeline(config, ws).artifact("encode", "sift").fvs), before)


def test_a_garbled_fv_chunk_is_never_read_and_is_recomputed(config, reference, tmp_path):
    from fvstudio.data.chunked import ChunkError

    ws, pipe, before, chunk = _copied_run(reference, config, tmp_path)
    data = bytearray(chunk.read_bytes())
    data[200] ^= 0x10  # same size: only the checksum can tell
    chunk.write_bytes(bytes(data))
    fresh = Pipeline(config, ws)
    with pytest.raises(ChunkError, match="fails its checksum"):
        np.asarray(fresh.artifact("encode", "sift").fvs)
    assert not chunk.exists()  # deleted, so the next run computes it
    with pytest.warns(UserWarning, match="missing or damaged"):
        fresh.run_step("encode")
    assert np.array_equal(np.asarray(Pipeline(config, ws).artifact("encode", "sift").fvs), before)

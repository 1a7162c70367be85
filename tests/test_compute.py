"""Block runner: threads and Dask give the same results, in order, with progress, cancel, errors naming the
block and a killed worker's blocks run again; the [compute] keys, their cache neutrality and --scheduler."""
from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fvstudio.engine.progress import Cancelled
from fvstudio.engine.serialization import atomic_path
from fvstudio.pipeline import Pipeline, PipelineConfig
from fvstudio.pipeline.compute import BlockError, BlockRunner, ComputeSettings, compute_settings
from fvstudio.pipeline.config import ConfigError

N_JOBS = 2
THREADS = ComputeSettings("threads")


# ---- toy block functions (module level: the workers import them by name) --------------------------------
def write_block(payload):
    """Write block ``index``'s array to ``out/block<index>.npy`` atomically; return its checksum."""
    if payload.get("sleep"):
        time.sleep(payload["sleep"])
    marker = payload.get("die_once")
    if marker and not os.path.exists(marker):  # first attempt only: the worker process dies mid-block
        Path(marker).write_text(str(os.getpid()))
        os._exit(1)
    if payload.get("fail"):
        raise ValueError(f"no data for block {payload['index']}")
    x = np.random.default_rng(payload["index"]).standard_normal(1000).astype(np.float32)
    out = Path(payload["out"]) / f"block{payload['index']:03d}.npy"
    with atomic_path(out) as tmp:
        np.save(tmp, x)
    return {"index": payload["index"], "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
            "n_jobs": payload["n_jobs"]}


def payloads(out: Path, n: int, **extra):
    return [{"index": i, "out": str(out), **extra} for i in range(n)]


def checksums(results):
    return [(r["index"], r["sha256"]) for r in results]


class Recorder:
    """A progress callback keeping every fraction; optionally sets ``event`` after ``after`` blocks."""

    def __init__(self, event=None, after=1):
        self.fractions, self.event, self.after = [], event, after

    def __call__(self, p):
        self.fractions.append(p.fraction)
        if self.event is not None and p.values.get("blocks_done", 0) >= self.after:
            self.event.set()


def written(folder: Path):
    return sorted(p.name for p in folder.glob("block*.npy"))


@pytest.fixture(scope="module")
def cluster():
    """A local Dask cluster of two worker processes, shared by the tests that run on an address."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as c:
        yield c


# ---- threads -------------------------------------------------------------------------------------------
def test_threads_run_in_order_with_progress_and_n_jobs(tmp_path):
    rec = Recorder()
    with BlockRunner(THREADS, N_JOBS) as runner:
        res = runner.map(write_block, payloads(tmp_path, 5), progress=rec, label="toy")
    assert [r["index"] for r in res] == list(range(5))
    assert {r["n_jobs"] for r in res} == {N_JOBS}
    assert len(written(tmp_path)) == 5
    assert rec.fractions[0] == 0.0 and rec.fractions[-1] == 1.0
    assert rec.fractions == sorted(rec.fractions)


def test_threads_cancel_after_the_first_block(tmp_path):
    stop = threading.Event()
    with BlockRunner(THREADS, N_JOBS) as runner, pytest.raises(Cancelled, match="toy cancelled"):
        runner.map(write_block, payloads(tmp_path, 5), progress=Recorder(stop), cancel=stop, label="toy")
    assert written(tmp_path) == ["block000.npy"]


def test_threads_pass_a_block_error_through_unchanged(tmp_path):
    """In the calling thread the engine's own exceptions keep their types (and the CLI's handling)."""
    blocks = payloads(tmp_path, 4)
    blocks[2]["fail"] = True
    with BlockRunner(THREADS, N_JOBS) as runner, pytest.raises(ValueError, match="no data for block 2"):
        runner.map(write_block, blocks, label="toy")
    assert len(written(tmp_path)) == 2


def test_step_progress_objects_are_reported_through_part(tmp_path):
    """A step's progress object (part/emit) gets the blocks' fractions below 1: only the pipeline runner
    reports a step complete."""
    from fvstudio.pipeline.runner import _StepProgress

    rec = Recorder()
    with BlockRunner(THREADS, N_JOBS) as runner:
        runner.map(write_block, payloads(tmp_path, 3), progress=_StepProgress(rec, "encode", 0.0, 1.0))
    assert rec.fractions == sorted(rec.fractions) and 0.99 <= rec.fractions[-1] < 1.0


def test_payloads_must_be_dicts(tmp_path):
    with BlockRunner(THREADS, N_JOBS) as runner, pytest.raises(TypeError, match="toy payload 0"):
        runner.map(write_block, [("not", "a", "dict")], label="toy")


# ---- dask ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_local_cluster_gives_the_threads_results_and_closes(tmp_path):
    with BlockRunner(THREADS, N_JOBS) as runner:
        want = runner.map(write_block, payloads(tmp_path / "threads", 6))
    rec = Recorder()
    with BlockRunner(ComputeSettings("dask", n_workers=2), N_JOBS) as runner:
        cluster, client = runner.cluster, runner.client
        assert len(cluster.workers) == 2
        got = runner.map(write_block, payloads(tmp_path / "dask", 6), progress=rec, label="toy")
    assert checksums(got) == checksums(want)  # same files, same order
    assert {r["n_jobs"] for r in got} == {1} and {r["n_jobs"] for r in want} == {N_JOBS}
    assert rec.fractions[-1] == 1.0 and rec.fractions == sorted(rec.fractions)
    assert client.status == "closed" and cluster.status.name == "closed"
    assert runner.client is None and runner.cluster is None


@pytest.mark.slow
def test_dask_cancel_stops_the_remaining_blocks(tmp_path, cluster):
    stop = threading.Event()
    settings = ComputeSettings("dask", address=cluster.scheduler_address)
    with BlockRunner(settings, N_JOBS) as runner:
        with pytest.raises(Cancelled, match="toy cancelled"):
            runner.map(write_block, payloads(tmp_path, 10, sleep=0.3), progress=Recorder(stop), cancel=stop,
                       label="toy")
        client = runner.client
    assert client.status == "closed"
    time.sleep(0.7)  # blocks already running when the cancel came may still finish
    assert 1 <= len(written(tmp_path)) < 10


@pytest.mark.slow
def test_dask_error_names_the_block(tmp_path, cluster):
    blocks = payloads(tmp_path, 4)
    blocks[3]["fail"] = True
    with BlockRunner(ComputeSettings("dask", address=cluster.scheduler_address), N_JOBS) as runner:
        with pytest.raises(BlockError, match=r"toy block 3 \(of 4\) failed: ValueError: no data for block 3") as err:
            runner.map(write_block, blocks, label="toy")
    assert err.value.index == 3 and isinstance(err.value.__cause__, ValueError)


@pytest.mark.slow
def test_a_killed_worker_s_block_runs_again_with_the_same_results(tmp_path, cluster):
    with BlockRunner(THREADS, N_JOBS) as runner:
        want = runner.map(write_block, payloads(tmp_path / "threads", 6))
    marker = tmp_path / "died"
    blocks = payloads(tmp_path / "dask", 6, sleep=0.1)
    blocks[2]["die_once"] = str(marker)
    with BlockRunner(ComputeSettings("dask", address=cluster.scheduler_address), N_JOBS) as runner:
        got = runner.map(write_block, blocks, label="toy")
    assert marker.exists()  # a worker did die in block 2
    assert checksums(got) == checksums(want)
    assert written(tmp_path / "dask") == written(tmp_path / "threads")


def test_a_bad_address_names_the_key_quickly():
    pytest.importorskip("distributed")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    t0 = time.perf_counter()
    with pytest.raises(ConnectionError, match=f"compute.address = '{address}'"):
        with BlockRunner(ComputeSettings("dask", address=address), N_JOBS, connect_timeout=1.0):
            pass
    assert time.perf_counter() - t0 < 10


# ---- config and CLI ------------------------------------------------------------------------------------
def test_compute_keys_validate():
    cfg = PipelineConfig({"compute.scheduler": "dask", "compute.address": "tcp://10.0.0.5:8786",
                          "compute.n_workers": 4})
    assert compute_settings(cfg) == ComputeSettings("dask", "tcp://10.0.0.5:8786", 4)
    assert compute_settings(PipelineConfig()) == ComputeSettings("threads", "", 0)
    with pytest.raises(ConfigError, match=r"compute.scheduler must be one of \['threads', 'dask'\], got 'spark'"):
        PipelineConfig({"compute.scheduler": "spark"})
    with pytest.raises(ConfigError, match="compute.address"):
        PipelineConfig({"compute.address": "localhost:8786"})
    with pytest.raises(ConfigError, match="compute.n_workers must be >= 0"):
        PipelineConfig({"compute.n_workers": -1})
    with pytest.raises(ConfigError, match="compute.scheduler"):
        ComputeSettings("processes")
    toml = PipelineConfig.from_toml_string('[compute]\nscheduler = "dask"\nn_workers = 2\n')
    assert compute_settings(toml).local_workers == 2
    assert ComputeSettings().local_workers >= 1  # 0 = as many as cores


def test_compute_keys_are_not_in_any_cache_key(tmp_path, sample_data_dir):
    from fvstudio.pipeline.steps import STEP_LIST

    assert not any("compute" in s.sections for s in STEP_LIST)
    root = Path(sample_data_dir) / "textures"
    base = {"dataset.root": str(root), "dataset.n_train": 3, "dataset.n_test": 2}
    threads = Pipeline(PipelineConfig(base), tmp_path / "ws").keys()
    dask = Pipeline(PipelineConfig({**base, "compute.scheduler": "dask", "compute.address": "tcp://h:8786",
                                    "compute.n_workers": 3}), tmp_path / "ws").keys()
    assert threads == dask


@pytest.mark.parametrize("option, scheduler, address", [
    ("threads", "threads", ""), ("dask", "dask", ""), ("tcp://10.0.0.5:8786", "dask", "tcp://10.0.0.5:8786")])
def test_scheduler_flag_overrides_the_config(tmp_path, option, scheduler, address):
    from fvstudio.cli import _load, build_parser

    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[compute]\nscheduler = "dask"\naddress = "tcp://other:8786"\n')
    args = build_parser().parse_args(["run", str(cfg_file), "--out", str(tmp_path / "out"), "--scheduler", option])
    cfg = _load(args)
    assert (cfg.get("compute.scheduler"), cfg.get("compute.address")) == (scheduler, address)


def test_a_bad_scheduler_flag_exits_2_naming_it(tmp_path, capsys):
    from fvstudio.cli import main

    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(f'[dataset]\nroot = "{tmp_path}"\n')
    assert main(["run", str(cfg_file), "--out", str(tmp_path / "out"), "--scheduler", "spark"]) == 2
    assert "--scheduler must be 'threads', 'dask'" in capsys.readouterr().err


def test_a_failed_dask_block_is_one_line_of_the_cli(tmp_path, capsys, monkeypatch):
    from fvstudio import cli

    def fail(args):
        raise BlockError("encode", 3, 10, ValueError("image 7 is unreadable"))

    monkeypatch.setattr(cli, "cmd_run", fail)
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("")
    assert cli.main(["run", str(cfg_file), "--out", str(tmp_path / "out")]) == 2
    assert "error: encode block 3 (of 10) failed: ValueError: image 7 is unreadable" in capsys.readouterr().err

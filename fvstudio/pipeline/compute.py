"""Where blocks of work run: in this process (threads) or on the worker processes of a Dask cluster.

The ``[compute]`` config section (:func:`compute_settings`) chooses; :class:`BlockRunner` runs a list of
blocks either way and gives the same list of results:

- ``scheduler = "threads"`` (the default): the blocks run one after another in the calling thread; each
  block parallelises inside with ``runtime.n_jobs`` threads (numba kernels release the GIL).
- ``scheduler = "dask"``: every block is one task on a Dask cluster, one thread per worker process
  (so a block runs with ``n_jobs = 1``). ``address = "tcp://host:8786"`` uses an existing cluster; an
  empty address starts a ``LocalCluster`` of ``n_workers`` processes (0 = one per core) for the run.

A block is ``fn(payload)`` with ``fn`` a module-level (picklable) function and ``payload`` a small dict
of plain values; the runner sets ``payload["n_jobs"]``. ``fn`` must be idempotent: it writes its own
output through a temporary file + rename and returns a small result, so a block run twice (its worker
died, and the scheduler ran it again) leaves the same files and gives the same result. A worker of a real
cluster must therefore see the dataset and the workspace at the same paths as this process (a shared file
system) and run the same fvstudio version.

None of these keys is part of a cache key (they are not in any step's ``sections``, and not hashed):
a run on Dask re-uses the cache of a run on threads and vice versa.
"""
from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..engine.progress import Cancelled, check_cancel, report
from .config import PipelineConfig, check_value

__all__ = ["ComputeSettings", "compute_settings", "BlockRunner", "BlockError"]

#: Attempts the scheduler of a local cluster allows a block whose worker died before it gives up on it
#: (``distributed.scheduler.allowed-failures``; raised to this if the Dask config says fewer).
ALLOWED_FAILURES = 3

#: Seconds to wait for the scheduler at ``compute.address`` before saying it does not answer.
CONNECT_TIMEOUT = 10.0


class BlockError(Exception):
    """A block's function raised on a Dask worker: the message names the block (``label``, ``index``);
    ``error`` (also the ``__cause__``, with the worker's traceback) is the original exception."""

    def __init__(self, label: str, index: int, total: int, error: BaseException) -> None:
        self.label, self.index, self.total, self.error = label, index, total, error
        super().__init__(f"{label} block {index} (of {total}) failed: {type(error).__name__}: {error}")


@dataclass(frozen=True)
class ComputeSettings:
    """The ``[compute]`` section: ``scheduler`` ("threads" | "dask"), ``address`` ("" = a local cluster, or
    "tcp://host:8786") and ``n_workers`` (local cluster processes, 0 = one per core). Validated like the
    config keys they come from (a ConfigError naming the key)."""

    scheduler: str = "threads"
    address: str = ""
    n_workers: int = 0

    def __post_init__(self) -> None:
        for name in ("scheduler", "address", "n_workers"):
            object.__setattr__(self, name, check_value(f"compute.{name}", getattr(self, name)))

    @property
    def local_workers(self) -> int:
        """Worker processes of the local cluster: ``n_workers``, or the cores this process may use."""
        if self.n_workers:
            return self.n_workers
        cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
        return max(1, len(cores))


def compute_settings(config: PipelineConfig) -> ComputeSettings:
    """The :class:`ComputeSettings` of ``config``'s ``[compute]`` section."""
    return ComputeSettings(**config.section("compute"))


def _emitter(progress) -> Optional[Callable[[int, int, str, Dict[str, Any]], None]]:
    """``emit(done, total, message, values)`` for either progress convention: a plain callback receiving a
    :class:`~fvstudio.engine.progress.Progress`, or a step's progress object (``part`` / ``emit``), whose
    ``part(0, 1)`` keeps the final "step complete" event for the pipeline runner."""
    if progress is None:
        return None
    part = getattr(progress, "part", None)
    callback = part(0.0, 1.0) if callable(part) else progress
    if callback is None:
        return None
    return lambda done, total, message, values: report(callback, done, total, message, **values)


class BlockRunner:
    """Runs blocks on threads or on Dask (see the module docstring); a context manager.

    ``with BlockRunner(compute_settings(cfg), n_jobs=cfg.get("runtime.n_jobs")) as runner:
    results = runner.map(fn, payloads, progress=..., cancel=..., label="encode")``. On Dask, entering
    connects to ``settings.address`` (a ConnectionError naming ``compute.address`` if nothing answers
    within ``connect_timeout`` seconds) or starts a local cluster; leaving closes the client and the local
    cluster, also after an error or a cancel.
    """

    def __init__(self, settings: ComputeSettings, n_jobs: int, *, connect_timeout: float = CONNECT_TIMEOUT):
        if not isinstance(settings, ComputeSettings):
            raise TypeError(f"settings must be a ComputeSettings, got {type(settings).__name__}")
        self.settings = settings
        self.n_jobs = check_value("runtime.n_jobs", n_jobs)
        self.connect_timeout = float(connect_timeout)
        self.client = None
        self.cluster = None

    @property
    def block_n_jobs(self) -> int:
        """The threads one block may use: ``n_jobs`` on threads, 1 on a Dask worker (one thread each)."""
        return 1 if self.settings.scheduler == "dask" else self.n_jobs

    # ---- lifetime ---------------------------------------------------------------------------------------
    def __enter__(self) -> "BlockRunner":
        if self.settings.scheduler == "dask":
            try:
                self._open_dask()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the client, then the local cluster (if this runner started one)."""
        client, cluster = self.client, self.cluster
        self.client = self.cluster = None
        try:
            if client is not None:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()

    def _open_dask(self) -> None:
        import dask
        from distributed import Client, LocalCluster

        address = self.settings.address
        if address:
            try:
                self.client = Client(address, timeout=self.connect_timeout, set_as_default=False)
            except (OSError, TimeoutError) as exc:  # distributed raises OSError("Timed out trying to connect")
                raise ConnectionError(f"compute.address = {address!r}: no Dask scheduler answered there within "
                                      f"{self.connect_timeout:g} s ({exc}); start one (dask scheduler) or fix "
                                      f"the address") from None
            return
        failures = max(int(dask.config.get("distributed.scheduler.allowed-failures")), ALLOWED_FAILURES)
        with dask.config.set({"distributed.scheduler.allowed-failures": failures}):
            self.cluster = LocalCluster(n_workers=self.settings.local_workers, threads_per_worker=1,
                                        processes=True, dashboard_address=None)
            self.client = Client(self.cluster, set_as_default=False)

    # ---- running ----------------------------------------------------------------------------------------
    def map(self, fn: Callable[..., Any], payloads: Sequence[Mapping[str, Any]], *, shared: Any = None,
            progress=None, cancel=None, label: str = "blocks") -> List[Any]:
        """``[fn(p) for p in payloads]`` (``[fn(shared, p) ...]`` when ``shared`` is given: what every block
        reads, e.g. the models; on Dask it is sent to each worker once, not with every block), in payload
        order, each payload given ``n_jobs`` = :attr:`block_n_jobs`. Progress is reported after every finished block; a set ``cancel`` raises
        :class:`~fvstudio.engine.progress.Cancelled` (on Dask the remaining blocks are cancelled). On
        threads a block's exception propagates unchanged (its traceback is this thread's); on Dask it comes
        back as a :class:`BlockError` naming the block, caused by the worker's exception."""
        if not callable(fn):
            raise TypeError(f"fn must be a module-level function, got {fn!r}")
        blocks = []
        for i, p in enumerate(payloads):
            if not isinstance(p, Mapping):
                raise TypeError(f"{label} payload {i} must be a dict of plain values, got {type(p).__name__}")
            blocks.append({**p, "n_jobs": self.block_n_jobs})
        emit = _emitter(progress)
        if emit is not None:
            emit(0, len(blocks), f"{label}: 0/{len(blocks)}", {"blocks_done": 0, "blocks_total": len(blocks)})
        if not blocks:
            return []
        if self.settings.scheduler == "dask":
            if self.client is None:
                raise RuntimeError("BlockRunner.map on Dask needs the runner entered (use it in a with block)")
            return self._map_dask(fn, blocks, emit, cancel, label, shared)
        return self._map_threads(fn, blocks, emit, cancel, label, shared)

    @staticmethod
    def _map_threads(fn, blocks, emit, cancel, label, shared=None) -> List[Any]:
        out = []
        for i, payload in enumerate(blocks):
            check_cancel(cancel, label)
            out.append(fn(payload) if shared is None else fn(shared, payload))  # an exception comes through as it is: the engine's own (DiskFullError,
            #                          DamagedFileError, ConfigError) keep their types and their handling
            _emit_done(emit, label, i + 1, len(blocks))
        return out

    def _map_dask(self, fn, blocks, emit, cancel, label, shared=None) -> List[Any]:
        from distributed import as_completed

        run = uuid.uuid4().hex[:12]
        keys = [f"{label}-{i}-{run}" for i in range(len(blocks))]
        if shared is None:
            futures = self.client.map(fn, blocks, key=keys, pure=False)
        else:
            common = self.client.scatter(shared, broadcast=True, hash=False)
            futures = self.client.map(fn, [common] * len(blocks), blocks, key=keys, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results: List[Any] = [None] * len(blocks)
        pending = as_completed(futures, loop=self.client.loop)  # not the default client: there is none
        done = 0
        try:
            while not pending.is_empty():
                check_cancel(cancel, label)
                batch = pending.next_batch(block=False)
                if not batch:  # poll, so that a cancel is seen within 50 ms, not at the next finished block
                    time.sleep(0.05)
                    continue
                for fut in batch:
                    i = index[fut.key]
                    if fut.status == "error":
                        error = fut.exception()
                        if isinstance(error, Cancelled):
                            raise error
                        raise BlockError(label, i, len(blocks), error) from error
                    if fut.status == "lost":  # its result lived on a worker that died since: the scheduler
                        pending.add(fut)      # computes it again (a task that keeps killing workers errs)
                        continue
                    if fut.status != "finished":  # cancelled by someone else, or lost with the cluster
                        raise BlockError(label, i, len(blocks), RuntimeError(f"the task ended {fut.status}"))
                    results[i] = fut.result()
                    done += 1
                    _emit_done(emit, label, done, len(blocks))
        except BaseException:
            with contextlib.suppress(Exception):  # a lost connection must not hide the reason we stop
                self.client.cancel(futures)
            raise
        return results


def _emit_done(emit, label: str, done: int, total: int) -> None:
    if emit is not None:
        emit(done, total, f"{label}: {done}/{total}", {"blocks_done": done, "blocks_total": total})

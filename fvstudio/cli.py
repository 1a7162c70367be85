"""The ``fvstudio`` command: no arguments opens the explorer; subcommands run the engine headless.

    fvstudio                                   open the explorer (same as ``fvstudio gui``)
    fvstudio gui [--workspace DIR] [--screenshot PATH] [--panel NAME] [--select CLASS/FILE] [--patch X,Y]
    fvstudio run CONFIG.toml --out DIR [--workspace DIR] [--set KEY=VALUE ...] [--scheduler threads|dask|tcp://HOST:PORT]
    fvstudio sweep CONFIG.toml --set KEY=V1,V2,... [--set ...] --out DIR [--workspace DIR]
    fvstudio sweep CONFIG.toml --preset table1|findings --out DIR
    fvstudio config [CONFIG.toml] [--set KEY=VALUE ...]   print the resolved config (all keys)

``run`` draws one progress bar per pipeline step on stderr and writes ``DIR/results.json`` and
``DIR/predictions.csv``. Ctrl-C asks the running step to stop at its next checkpoint (every cache stays
consistent: steps are written through temporary files) and exits with status 130; a second Ctrl-C
aborts at once. A bad config exits with status 2 and a message naming the file and key.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, List, Optional

EXIT_CONFIG = 2
EXIT_OS_ERROR = 1
EXIT_INTERRUPTED = 130


class TerminalProgress:
    """Progress callback drawing one bar per step on a text stream (a tty: redrawn in place)."""

    def __init__(self, stream=None, width: int = 28, min_interval: float = 0.1):
        self.stream = stream or sys.stderr
        self.width = width
        self.min_interval = min_interval
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.step: Optional[str] = None
        self.prefix = ""
        self._t_step = 0.0
        self._last_draw = 0.0
        self._last_frac = 0.0
        self._lock = threading.Lock()

    def __call__(self, p) -> None:
        with self._lock:
            step = p.values.get("step", "")
            if "variant_label" in p.values:
                self.prefix = f"[{p.values.get('variant', 0) + 1}] "
            frac = float(p.values.get("step_fraction", p.fraction))
            now = time.perf_counter()
            if step != self.step:
                if self.step is not None:
                    self._draw(1.0, "", final=True)
                self.step, self._t_step, self._last_draw = step, now, 0.0
            done = frac >= 1.0
            if p.values.get("warning"):  # e.g. images left out: always shown, on a line of its own
                if self.tty and self.step is not None:
                    self.stream.write("\n")
                self.stream.write(f"warning: {p.values['warning']}\n")
                self.stream.flush()
            if done or now - self._last_draw >= self.min_interval:
                self._last_draw = now
                if self.tty or done:
                    self._draw(frac, p.message, final=done)
                    if done:
                        self.step = None

    def _draw(self, frac: float, message: str, final: bool = False) -> None:
        n = int(round(frac * self.width))
        bar = "#" * n + "." * (self.width - n)
        elapsed = time.perf_counter() - self._t_step
        msg = (message or "")[:48]
        line = f"{self.prefix}{self.step or '':<11} [{bar}] {frac * 100:5.1f}% {elapsed:7.1f} s  {msg}"
        if self.tty:
            self.stream.write("\r" + line.ljust(110)[:130] + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        with self._lock:
            if self.step is not None and self.tty:
                self.stream.write("\n")
                self.stream.flush()
            self.step = None


def _run_interruptible(func: Callable[[Any], Any]):
    """Run ``func(cancel_token)`` in a worker thread; Ctrl-C sets the token and waits for it to stop.

    Returns the function's value; re-raises its exception (``Cancelled`` after a Ctrl-C).
    """
    from .engine.progress import CancelToken

    token = CancelToken()
    box: dict = {}
    done = threading.Event()

    def target():
        try:
            box["value"] = func(token)
        except BaseException as exc:  # handed to the main thread
            box["error"] = exc
        finally:
            done.set()

    # Wait on an Event, not on Thread.join(timeout): a KeyboardInterrupt landing inside join() on CPython
    # 3.9-3.12 can leave is_alive() False while the worker still runs, so the process exited mid-write
    # (and aborted: "terminate called without an active exception") instead of stopping at the checkpoint.
    worker = threading.Thread(target=target, name="fvstudio-run", daemon=True)
    worker.start()
    interrupted = False
    while not done.is_set():
        try:
            done.wait(0.2)
        except KeyboardInterrupt:
            if interrupted:
                raise
            interrupted = True
            token.cancel()
            sys.stderr.write("\ninterrupted: stopping at the next checkpoint (Ctrl-C again to abort)...\n")
            sys.stderr.flush()
    if "error" in box:
        raise box["error"]
    if interrupted:
        from .engine.progress import Cancelled

        raise Cancelled("interrupted")
    return box.get("value")


def _load(args) -> "Any":
    from .pipeline import load_config
    from .pipeline.sweep import parse_set_option

    cfg = load_config(args.config)
    for item in getattr(args, "set", None) or []:
        key, values = parse_set_option(item)
        if len(values) != 1:
            from .pipeline.config import SCHEMA

            sep = " ('+' joins a list's items, e.g. sift+lcs)" if SCHEMA[key].type == "list[str]" else ""
            raise ValueError(f"--set {key}: 'run' takes one value per key{sep}; "
                             f"use 'fvstudio sweep' for several")
        cfg.set(key, values[0])
    scheduler = getattr(args, "scheduler", None)
    if scheduler is not None:
        for key, value in scheduler_overrides(scheduler).items():
            cfg.set(key, value)
    return cfg


def scheduler_overrides(option: str) -> dict:
    """The ``[compute]`` keys ``--scheduler`` sets: ``threads``; ``dask`` (a local cluster); or a Dask
    scheduler's address ``tcp://host:port`` (dask on that cluster). ValueError naming the option."""
    option = option.strip()
    if option in ("threads", "dask"):
        return {"compute.scheduler": option, "compute.address": ""}
    if option.startswith("tcp://"):
        from .pipeline.config import ConfigError, check_value

        try:
            return {"compute.scheduler": "dask", "compute.address": check_value("compute.address", option)}
        except ConfigError as exc:
            raise ValueError(f"--scheduler {option}: {exc}") from None
    raise ValueError(f"--scheduler must be 'threads', 'dask' (a local cluster) or a Dask scheduler's address "
                     f"tcp://host:port, got {option!r}")


def _writable_folder(path: Optional[Path], option: str) -> None:
    """At the door: ``path`` is (or can be made) a writable folder; ValueError naming the option."""
    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot create the folder ({exc.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: the folder is not writable")


def cmd_run(args) -> int:
    from .pipeline import Pipeline, write_results

    _writable_folder(args.out, "--out")
    _writable_folder(args.workspace, "--workspace")
    cfg = _load(args)
    pipe = Pipeline(cfg, args.workspace)
    bar = TerminalProgress() if not args.quiet else None
    if not args.quiet:
        ds = pipe.dataset
        sys.stderr.write(f"dataset: {ds.describe()}\n"
                         f"splits: {len(pipe.splits)} x ({len(pipe.splits[0].train)} train / "
                         f"{len(pipe.splits[0].test)} test); workspace: {pipe.workspace}\n")
    t0 = time.perf_counter()
    try:
        result = _run_interruptible(lambda tok: pipe.run_all(progress=bar, cancel=tok))
    finally:
        if bar is not None:
            bar.close()
    total = time.perf_counter() - t0
    paths = write_results(result, args.out, config_dict=cfg.to_dict(),
                          extra={"total_seconds": total, "workspace": str(pipe.workspace),
                                 "config_file": str(Path(args.config).resolve())})
    _print_summary(result, total)
    print(f"wrote {paths['results']} and {paths['predictions']}")
    return 0


def _print_summary(result, total: float) -> None:
    std = result.metrics_std
    parts = []
    for k, v in result.metrics.items():
        s = f"{k} = {100 * v:.2f}%"
        if len(result.per_split) > 1 and std.get(k) is not None:
            s += f" +- {100 * std[k]:.2f}"
        parts.append(s)
    print("; ".join(parts))
    failed = result.extra.get("failed_images") or {}
    if failed.get("count"):
        rows = failed["images"]
        shown = "; ".join(f"{r['id']} ({r['role']}): {r['reason']}" for r in rows[:5])
        more = f"; and {len(rows) - 5} more" if len(rows) > 5 else ""
        print(f"left out {failed['count']} images that give no descriptor, not scored: {shown}{more} "
              f"(all in results.json, extra.failed_images)")
    comp = result.compression
    if comp:
        mse = comp.get("mse_test")
        print(f"compression: b = {comp['bits_per_dim']:g} bits/dim, G = {comp['group']}: "
              f"{comp['bytes_per_image']:.0f} bytes per image ({comp['bytes_pq']} without the sparsity bit, "
              f"{comp['bytes_float32']} as float32)" + (f", test MSE {mse:.4g}" if mse is not None else ""))
    if result.hubness:  # the first split's first channel; every one is in results.json
        ch, dbs = next(iter(result.hubness[0].items()))
        figs = "; ".join(f"{db}: largest N_k {h['largest']}, skewness {h['skewness']:.2f}, "
                         f"never chosen {100 * h['never_chosen']:.0f}%" for db, h in dbs.items())
        print(f"hubness (split 0, {ch}, k = {next(iter(dbs.values()))['k']}): {figs}")
    cached = f" (cached: {', '.join(result.cached_steps)})" if result.cached_steps else ""
    print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
          + f"; total {total:.1f} s{cached}")


def cmd_sweep(args) -> int:
    from .pipeline import load_config
    from .pipeline.sweep import parse_set_option, run_sweep
    from .pipeline.sweep_plan import plan_sweep

    _writable_folder(args.out, "--out")
    _writable_folder(args.workspace, "--workspace")
    cfg = load_config(args.config)
    sets = [parse_set_option(s) for s in (args.set or [])]
    plan = plan_sweep(sets, args.preset)
    variants = plan.variants
    bar = TerminalProgress() if not args.quiet else None

    def announce(i, label):
        if bar is not None:
            bar.close()
        if not args.quiet:
            sys.stderr.write(f"variant {i + 1}/{len(variants)}: {label}\n")

    try:
        sweep = _run_interruptible(lambda tok: run_sweep(cfg, variants, args.out, args.workspace,
                                                          progress=bar, cancel=tok, on_variant=announce,
                                                          **plan.run_kwargs()))
    finally:
        if bar is not None:
            bar.close()
    primary = sweep.results[0].primary_metric if sweep.results else ""
    for label, why in sweep.skipped:
        print(f"{label:<40} skipped: {why}")
    for row in sweep.rows:
        size = f", {row['bytes_per_image']:.0f} bytes/image" if row.get("compressed") else ""
        print(f"{row['label']:<40} {primary} = {100 * row[primary]:.2f}%  ({row['seconds_total']:.1f} s{size})")
    charts = " and ".join(str(p) for p in (sweep.png_path, sweep.bytes_png_path) if p is not None)
    print(f"wrote {sweep.csv_path} and {charts}")
    return 0


def cmd_config(args) -> int:
    cfg = _load(args) if args.config else None
    from .pipeline import PipelineConfig

    cfg = cfg or PipelineConfig()
    sys.stdout.write(cfg.to_toml_string())
    return 0


def cmd_gui(args) -> int:
    try:
        from .gui.app import run_gui
    except ImportError as exc:
        sys.stderr.write(f"fvstudio: the explorer is not available ({exc}).\n"
                         f"Headless commands still work: fvstudio run CONFIG.toml --out DIR\n")
        return 1
    extra = {k: getattr(args, k) for k in ("select", "patch") if getattr(args, k, None) is not None}
    return int(run_gui(workspace=args.workspace, screenshot=args.screenshot, panel=args.panel, **extra) or 0)


def build_parser() -> argparse.ArgumentParser:
    from .pipeline.presets import PRESET_HELP

    parser = argparse.ArgumentParser(
        prog="fvstudio",
        description="Fisher Vector image classification: explorer (no arguments) and headless runner.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"fvstudio {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    g = sub.add_parser("gui", help="open the explorer window")
    g.add_argument("--workspace", type=Path, help="workspace folder to open")
    g.add_argument("--screenshot", type=Path, help="render offscreen, save a PNG to this path and exit")
    g.add_argument("--panel", help="panel to show (for --screenshot)")
    g.add_argument("--select", metavar="CLASS/FILE", help="show this image in the Dataset panel")
    g.add_argument("--patch", metavar="X,Y", help="inspect the patch nearest to X,Y (pixels of the shown image; "
                                                  "turns the patch grid on)")
    g.set_defaults(func=cmd_gui)

    r = sub.add_parser("run", help="run the pipeline of a TOML config; write results.json and predictions.csv")
    r.add_argument("config", type=Path, help="pipeline config (TOML); unspecified keys take the paper's defaults")
    r.add_argument("--out", type=Path, required=True, help="folder for results.json and predictions.csv")
    r.add_argument("--workspace", type=Path, help="cache folder (default: per-dataset folder in the user cache)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. gmm.n_components=64")
    r.add_argument("--scheduler", metavar="threads|dask|tcp://HOST:PORT",
                   help="where blocks run (overrides [compute]): threads in this process, dask on a local "
                        "cluster, or dask on the cluster whose scheduler has this address")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("sweep", help="run one config per value of swept keys; write sweep.csv and sweep.png")
    s.add_argument("config", type=Path)
    s.add_argument("--set", action="append", metavar="KEY=V1,V2,...",
                   help="a key and its values (repeat for a grid); the first key is the plot's x axis")
    s.add_argument("--preset", choices=sorted(PRESET_HELP),
                   help="; ".join(f"{k}: {v}" for k, v in sorted(PRESET_HELP.items())))
    s.add_argument("--out", type=Path, required=True, help="folder for sweep.csv, sweep.png and runs/")
    s.add_argument("--workspace", type=Path)
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_sweep)

    c = sub.add_parser("config", help="print a config with every key resolved (defaults filled in)")
    c.add_argument("config", type=Path, nargs="?")
    c.add_argument("--set", action="append", metavar="KEY=VALUE")
    c.set_defaults(func=cmd_config)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        return cmd_gui(argparse.Namespace(workspace=None, screenshot=None, panel=None))
    from .engine.progress import Cancelled
    from .pipeline.compute import BlockError

    try:
        return args.func(args)
    except BlockError as exc:  # a block failed on a Dask worker: told as the same error here would be
        if os.environ.get("FVSTUDIO_DEBUG") or not isinstance(exc.error, (ValueError, OSError)):
            raise
        sys.stderr.write(f"fvstudio {args.command}: error: {exc}\n")
        return EXIT_CONFIG if isinstance(exc.error, ValueError) else EXIT_OS_ERROR
    except Cancelled:
        sys.stderr.write("cancelled: finished steps stay cached; run the same command again to resume\n")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        sys.stderr.write("aborted\n")
        return EXIT_INTERRUPTED
    except (ValueError, FileNotFoundError) as exc:  # ConfigError is a ValueError
        if os.environ.get("FVSTUDIO_DEBUG"):
            raise
        sys.stderr.write(f"fvstudio {args.command}: error: {exc}\n")
        return EXIT_CONFIG
    except OSError as exc:  # disk full, permissions...: one line naming the file, not a traceback
        if os.environ.get("FVSTUDIO_DEBUG"):
            raise
        sys.stderr.write(f"fvstudio {args.command}: error: {_os_error_message(exc)}\n")
        return EXIT_OS_ERROR


def _os_error_message(exc: OSError) -> str:
    import errno
    import shutil

    where = exc.filename or ""
    msg = f"{exc.strerror or exc}{': ' + str(where) if where else ''}"
    if exc.errno == errno.ENOSPC and where:
        folder = Path(where).parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free = shutil.disk_usage(folder).free
        msg += f" ({free / 1e6:.0f} MB free in {folder}); free some space and run again to resume"
    return str(msg)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Caltech-101 end to end, paper defaults: where the time, the disk and the memory go, path by path (issue #11).

Variants, each a fresh process (peak RSS is per variant) on split seed 0 (30 train / 50 test per class):

    stored      descriptors.keep = "all": every image's raw SIFT on disk, then PCA, GMM, encode, classifier
                (the path before streaming; ~3.6 MB of descriptors an image, so it needs ~22 GB free)
    stream      descriptors.keep = "vocabulary" (the default): only ``descriptors.vocab_images`` training
                images' descriptors stored, every other image described inside the encode pass
    stream+pq   then PQ codes b = 1, G = 8 (compression.bits_per_dim = 1) on ``stream``'s FVs (its workspace:
                only compress, classifier and evaluate run), the classifier on the codes
    dask1/dask2 the encode step again (vocabulary cached from ``stream``) on a dask LocalCluster of 1 / 2
                worker processes (compute.scheduler = "dask"): the same FVs, the scale-out's overhead/gain

Per variant: wall seconds per step and in all, peak RSS of the process (and of its children: the dask
workers), bytes on disk per image (descriptor store, FVs, codes) and the metrics. Run from an empty
workspace per variant (``--workspace-root``, deleted afterwards unless ``--keep``), so the descriptors step is
timed too. Ratios are what to compare: absolute times depend on the machine and its load (printed).

Run:  python benchmarks/bench_scale.py --caltech /work/data/caltech101 --workspace-root /tmp/scale \\
          --variants stream stream+pq dask1 dask2
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from caltech import split_dataset

HERE = Path(__file__).resolve().parent
CHILD = r"""
import json, resource, sys, time
from fvstudio.pipeline import Pipeline, PipelineConfig
cfg = PipelineConfig.from_toml(sys.argv[1])
pipe = Pipeline(cfg, sys.argv[2])
mode = sys.argv[3]
t = time.perf_counter()
if mode == "encode":
    pipe.run_step("encode")
    out = {"timings": dict(pipe.last_timings), "metrics": {}}
else:
    res = pipe.run_all()
    out = {"timings": dict(res.timings), "metrics": dict(res.metrics),
           "compression": {k: v for k, v in (res.compression or {}).items() if k != "channels"}}
out["total"] = time.perf_counter() - t
out["rss_self_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["rss_children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print("RESULT " + json.dumps(out))
"""

VARIANTS = {
    "stored": {"descriptors.keep": "all"},
    "stream": {},
    "stream+pq": {"compression.bits_per_dim": 1.0, "compression.group": 8},
    "dask1": {"compute.scheduler": "dask", "compute.n_workers": 1},
    "dask2": {"compute.scheduler": "dask", "compute.n_workers": 2},
}


def du(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def toml_for(args, overrides) -> str:
    import tomli_w

    doc = {"dataset": split_dataset(args.caltech, args.seed)}
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        doc.setdefault(section, {})[name] = value
    return tomli_w.dumps(doc)


def run_variant(args, name, ws: Path, mode: str):
    toml = ws.parent / f"{name}.toml"
    toml.write_text(toml_for(args, VARIANTS[name]))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent)] + sys.path))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(toml), str(ws), mode], capture_output=True, text=True,
                          env=env)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"{name} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(line[0][len("RESULT "):])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--caltech", default=os.environ.get("FVSTUDIO_CALTECH101", ""))
    ap.add_argument("--workspace-root", default="/tmp/fvstudio-bench-scale")
    ap.add_argument("--variants", nargs="+", default=["stream", "stream+pq", "dask1", "dask2"],
                    choices=list(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the workspaces")
    ap.add_argument("--json", default="", help="also write the rows here")
    args = ap.parse_args()
    if not args.caltech or not (Path(args.caltech) / "caltech101").is_dir():
        print("bench_scale: skipped, give --caltech (the folder prep_caltech101.sh made) or FVSTUDIO_CALTECH101")
        return
    top = Path(args.workspace_root)
    top.mkdir(parents=True, exist_ok=True)
    n_images = 0
    for name in ("train", "test"):
        n_images += len(Path(args.caltech, "caltech101_splits", f"{name}{30 if name == 'train' else 50}_seed"
                             f"{args.seed}.txt").read_text().split())
    print(f"bench_scale: Caltech-101 split seed {args.seed}, {n_images} images, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}")
    rows = []
    stream_ws = top / "ws-stream"
    for name in args.variants:
        if name.startswith("dask") or name == "stream+pq":
            ws, mode = stream_ws, ("encode" if name.startswith("dask") else "all")
            if not (ws / "steps" / "gmm").is_dir():
                print(f"{name}: needs the stream variant's workspace (run it first in the same call)")
                continue
            if name.startswith("dask"):
                shutil.rmtree(ws / "steps" / "encode", ignore_errors=True)
        else:
            ws, mode = top / f"ws-{name.replace('+', '-')}", "all"
            shutil.rmtree(ws, ignore_errors=True)
        r = run_variant(args, name, ws, mode)
        r.update(name=name, desc_bytes=du(ws / "descriptors"), fv_bytes=du(ws / "steps" / "encode"),
                 code_bytes=du(ws / "steps" / "compress") if name == "stream+pq" else 0)
        rows.append(r)
        t = r["timings"]
        print(f"{name:10s} total {r['total']:7.1f} s | " + ", ".join(f"{k} {v:.1f}" for k, v in t.items() if v) +
              f" | RSS {r['rss_self_mb']:.0f} MB (children {r['rss_children_mb']:.0f}) | per image: descriptors "
              f"{r['desc_bytes'] / n_images / 1e3:.1f} kB, FVs {r['fv_bytes'] / n_images / 1e3:.1f} kB, codes "
              f"{r['code_bytes'] / n_images / 1e3:.2f} kB | " +
              ", ".join(f"{k} {100 * v:.2f}%" for k, v in r["metrics"].items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    base = next((r for r in rows if r["name"] == "stream"), None)
    if base:
        enc = base["timings"].get("encode") or 0
        for r in rows:
            if r["name"].startswith("dask") and enc:
                print(f"{r['name']}: encode {r['timings'].get('encode', 0):.1f} s = x{r['timings'].get('encode', 0) / enc:.2f}"
                      f" of the threads encode ({enc:.1f} s)")
    if not args.keep:
        for name in args.variants:
            shutil.rmtree(top / f"ws-{name.replace('+', '-')}", ignore_errors=True)
    print("per-image costs (the scale model's inputs): " + "; ".join(
        f"{r['name']}: {sum(r['timings'].values()) / n_images * 1e3:.1f} ms wall/image over the steps it ran"
        for r in rows))


if __name__ == "__main__":
    main()

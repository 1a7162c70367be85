"""Numba kernels give bitwise the same results compiled fresh and loaded from numba's cache.

The first subprocess compiles every kernel into an empty NUMBA_CACHE_DIR, the second loads them from
it (see fvstudio/engine/jit.py for why they used to differ). Each saves dense SIFT, LCS, a Fisher
Vector, an E-step's statistics and an SGD model of fixed inputs; the files must match bit for bit.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import sys
import numpy as np
import fvstudio
from fvstudio.engine.descriptors import dense_sift, local_color_statistics
from fvstudio.engine.fisher import FisherEncoder
from fvstudio.engine.gmm import DiagonalGMM
from fvstudio.engine.posteriors import accumulate_statistics
from fvstudio.engine.svm import OneVsRestSGD

rng = np.random.default_rng(0)
rgb = rng.random((90, 110, 3)).astype(np.float32)
rgb = (rgb + np.roll(rgb, 1, 0) + np.roll(rgb, 1, 1)) / 3  # some spatial structure
gray = rgb.mean(2).astype(np.float32)
K, D = 16, 8
w = rng.dirichlet(np.ones(K))
mu = rng.standard_normal((K, D))
var = rng.uniform(0.5, 1.5, (K, D))
X = (mu[rng.integers(0, K, 3000)] + rng.standard_normal((3000, D))).astype(np.float32)
gmm = DiagonalGMM.from_params(w, mu, var)
st = accumulate_statistics(X, gmm.terms, threshold=1e-4)
np.savez(sys.argv[1], package=np.array(fvstudio.__file__),
         sift=dense_sift(gray, scales=3).descriptors,
         lcs=local_color_statistics(rgb, scales=3).descriptors,
         fv=FisherEncoder(gmm).encode(X),
         A=st.A, B=st.B, C=st.C, loglik=st.log_likelihood,
         sgd=OneVsRestSGD(lam=1e-3, epochs=2).fit(X, rng.integers(0, 3, 3000)).coef_)
"""


def _run(out: Path, cache: Path) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-c", SCRIPT, str(out)], check=True, env=env, cwd=str(ROOT),
                   timeout=600)
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


def test_fresh_compile_and_cache_load_agree_bitwise(tmp_path):
    cache = tmp_path / "numba_cache"
    first = _run(tmp_path / "first.npz", cache)   # compiles every kernel into the empty cache
    assert any(cache.rglob("*.nbi")), "the first run wrote no numba cache"
    second = _run(tmp_path / "second.npz", cache)  # loads them from it
    assert str(first.pop("package")).startswith(str(ROOT)) and str(second.pop("package")).startswith(str(ROOT))
    for key in first:
        a, b = first[key], second[key]
        assert a.shape == b.shape and a.size > 0, key
        differ = np.count_nonzero(a.view(np.uint8) != b.view(np.uint8))
        assert differ == 0, f"{key}: {differ} bytes differ between the compiled and the cached run"

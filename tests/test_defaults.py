"""Every engine default comes from fvstudio.engine.defaults (one home for the paper's setup)."""
import inspect

import pytest

from fvstudio.engine import defaults as D
from fvstudio.engine.descriptors import dense_sift, local_color_statistics
from fvstudio.engine.fisher import FisherEncoder, SoftBoWEncoder, VLADEncoder
from fvstudio.engine.gmm import DiagonalGMM
from fvstudio.engine.pca import PCA
from fvstudio.engine.svm import OneVsRestSGD


def _defaults(fn):
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


@pytest.mark.parametrize("fn, expected", [
    (DiagonalGMM, {"max_iter": D.GMM_MAX_ITER, "tol": D.GMM_TOL, "init": D.GMM_INIT,
                   "var_floor": D.GMM_VAR_FLOOR, "posterior_threshold": D.POSTERIOR_THRESHOLD,
                   "n_init": D.GMM_N_INIT}),
    (OneVsRestSGD, {"loss": D.LOSS, "lam": D.LAM, "epochs": D.EPOCHS, "balance": D.BALANCE,
                    "averaging": D.AVERAGING, "bias": D.BIAS, "lam_grid": D.LAMBDA_GRID, "cv_folds": D.CV_FOLDS}),
    (PCA, {"n_components": D.PCA_COMPONENTS}),
    (FisherEncoder, {"gradients": D.GRADIENTS, "fim": D.FIM, "power": D.POWER, "lp": D.LP,
                     "posterior_threshold": D.POSTERIOR_THRESHOLD}),
    (SoftBoWEncoder, {"power": D.POWER, "lp": D.LP, "posterior_threshold": D.POSTERIOR_THRESHOLD}),
    (VLADEncoder, {"power": D.POWER, "lp": D.LP, "posterior_threshold": D.POSTERIOR_THRESHOLD}),
    (dense_sift, {"patch": D.PATCH, "step": D.STEP, "scales": D.SCALES, "scale_factor": D.SCALE_FACTOR,
                  "window": D.SIFT_WINDOW, "presmooth": D.PRESMOOTH, "root": D.ROOT_SIFT,
                  "contrast_threshold": D.CONTRAST_THRESHOLD}),
    (local_color_statistics, {"patch": D.PATCH, "step": D.STEP, "scales": D.SCALES,
                              "scale_factor": D.SCALE_FACTOR}),
])
def test_engine_defaults_are_the_shared_defaults(fn, expected):
    got = _defaults(fn)
    for name, value in expected.items():
        assert got[name] == value, (fn.__name__, name)

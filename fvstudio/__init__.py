"""fvstudio: image classification with the Fisher Vector (Sanchez et al., IJCV 2013).

`fvstudio.engine` holds the numerical core (no Qt), `fvstudio.data` datasets and caches,
`fvstudio.pipeline` the declarative runner, `fvstudio.gui` the explorer, `fvstudio.cli` the command.
"""
import os as _os

# numba's on-disk cache must live outside the source tree (it is per-machine compiled code).
if "NUMBA_CACHE_DIR" not in _os.environ:
    try:
        import platformdirs as _pd

        _os.environ["NUMBA_CACHE_DIR"] = _os.path.join(_pd.user_cache_dir("fvstudio"), "numba")
    except Exception:  # pragma: no cover - platformdirs is a hard dependency
        pass

__version__ = "0.1.0"

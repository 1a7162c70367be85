"""Test setup: Qt renders offscreen, numba caches outside the repo, shared/ files via skipping fixtures."""
import os
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), "fvstudio-test-numba-cache"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ``../shared`` folder (paper, VLFeat goldens, VOC label files); skips if absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present beside the checkout")
    return SHARED


@pytest.fixture(scope="session")
def vlfeat_golden(shared_dir):
    """Arrays of ``shared/golden/vlfeat_0.9.21_reference.npz``; skips if absent."""
    path = shared_dir / "golden" / "vlfeat_0.9.21_reference.npz"
    if not path.exists():
        pytest.skip(f"{path} is not present")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="session")
def voc2007_imagesets(shared_dir) -> Path:
    path = shared_dir / "voc2007_imagesets"
    if not path.is_dir():
        pytest.skip(f"{path} is not present")
    return path


@pytest.fixture(scope="session")
def sample_data_dir() -> Path:
    return REPO_ROOT / "sample_data"


@pytest.fixture(scope="module")
def textures_24(tmp_path_factory, sample_data_dir) -> Path:
    """A copy of 6 images of each of 4 texture classes (24 images): a dataset small enough for whole runs."""
    import shutil

    src = Path(sample_data_dir) / "textures"
    if not src.is_dir():
        pytest.skip("sample_data/textures is not there")
    root = tmp_path_factory.mktemp("ds") / "textures"
    for cls in ("bricks", "rust", "spots", "waves"):
        (root / cls).mkdir(parents=True)
        for f in sorted((src / cls).iterdir())[:6]:
            shutil.copy(f, root / cls / f.name)
    return root

"""Where the Caltech-101 split lists are: the ``[dataset]`` section of one split, for the benchmarks that run it.

``prep_caltech101.sh`` writes a folder holding ``caltech101/`` (one folder per class) and ``caltech101_splits/``
(``train30_seedS.txt`` / ``test50_seedS.txt`` per split seed S). Imported by the scripts in this folder, which
run with it on ``sys.path``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict


def check_root(root) -> str:
    """'' if ``root`` is a prepared Caltech-101 folder, else what is missing (to print or raise)."""
    root = Path(root)
    if not (root / "caltech101").is_dir() or not (root / "caltech101_splits" / "train30_seed0.txt").is_file():
        return f"{root} does not hold caltech101/ and caltech101_splits/train30_seed0.txt " \
               f"(run shared/datasets/prep_caltech101.sh)"
    return ""


def split_dataset(root, seed: int = 0) -> Dict[str, str]:
    """The ``[dataset]`` keys of split ``seed``: 30 training / up to 50 test images per class."""
    root = Path(root)
    return {"root": str(root / "caltech101"),
            "train_list": str(root / "caltech101_splits" / f"train30_seed{seed}.txt"),
            "test_list": str(root / "caltech101_splits" / f"test50_seed{seed}.txt")}

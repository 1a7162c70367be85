"""Images that give no descriptor are reported and left out of training and testing, never scored."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from fvstudio.pipeline import Pipeline, PipelineConfig, write_results
from fvstudio.pipeline.config import ConfigError

CLASSES = ("bricks", "rust", "spots", "waves")


def _config(root, **extra) -> PipelineConfig:
    c = PipelineConfig()
    c.update({"dataset.root": str(root), "dataset.max_pixels": 20_000, "descriptors.scales": 1,
              "descriptors.step": 6, "pca.n_components": 16, "pca.sample": 5_000, "gmm.n_components": 4,
              "gmm.sample": 5_000, "gmm.max_iter": 20, "classifier.select_lambda": False,
              "classifier.epochs": 5, "descriptors.channels": ["sift"]})
    c.update(extra)
    return c


@pytest.fixture()
def dataset(tmp_path, sample_data_dir):
    src = Path(sample_data_dir) / "textures"
    if not src.is_dir():
        pytest.skip("sample_data/textures is not there")
    root = tmp_path / "ds"
    train, test = [], []
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for j, f in enumerate(sorted((src / cls).iterdir())[:8]):
            shutil.copy(f, root / cls / f.name)
            (train if j < 5 else test).append(f"{cls}/{f.name}")
    (tmp_path / "train.txt").write_text("\n".join(train) + "\n")
    (tmp_path / "test.txt").write_text("\n".join(test) + "\n")
    return root, tmp_path / "train.txt", tmp_path / "test.txt", test


def _break(root: Path, rel: str, how: str) -> None:
    p = root / rel
    if how == "empty":
        p.write_bytes(b"")
    elif how == "text":
        p.write_bytes(b"this is not an image\n")
    elif how == "tiny":  # a valid image, smaller than one patch
        cv2.imwrite(str(p.with_suffix(".png")), np.zeros((10, 10, 3), np.uint8))
        p.unlink()
        p.with_suffix(".png").rename(p)


def test_unreadable_test_images_are_left_out_and_counted(dataset, tmp_path):
    root, train, test, test_ids = dataset
    bad = {test_ids[0]: "empty", test_ids[4]: "text", test_ids[8]: "tiny"}
    for rel, how in bad.items():
        _break(root, rel, how)
    pipe = Pipeline(_config(root, **{"dataset.train_list": str(train), "dataset.test_list": str(test)}),
                    tmp_path / "ws")
    result = pipe.run_all()
    assert len(result.test_ids[0]) == len(test_ids) - 3
    assert not set(bad) & set(result.test_ids[0])
    enc = pipe.artifact("encode")
    assert not set(bad) & set(enc.ids) and len(enc.fvs) == 32 - 3
    assert np.linalg.norm(enc.fvs, axis=1).min() > 0  # no all-zero row
    failed = result.extra["failed_images"]
    assert failed["count"] == 3 and {r["id"] for r in failed["images"]} == set(bad)
    assert all(r["role"] == "test" and r["reason"] for r in failed["images"])
    out = write_results(result, tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["extra"]["failed_images"]["count"] == 3
    assert out  # the predictions file holds only scored images
    assert not any(b in (tmp_path / "out" / "predictions.csv").read_text() for b in bad)


def test_a_class_without_a_readable_training_image_stops_before_pca(dataset, tmp_path):
    root, train, test, _ = dataset
    for f in sorted((root / "rust").iterdir())[:5]:
        f.write_bytes(b"")
    pipe = Pipeline(_config(root, **{"dataset.train_list": str(train), "dataset.test_list": str(test)}),
                    tmp_path / "ws")
    with pytest.raises(ConfigError, match=r"class 'rust' cannot be learned: all 5 of its training images"):
        pipe.run_all()
    assert pipe.computed["descriptors"] == 1 and pipe.computed["pca"] == 0


def test_a_train_list_of_one_class_is_refused_at_the_door(dataset, tmp_path):
    root, train, test, _ = dataset
    one = tmp_path / "one.txt"
    one.write_text("".join(line + "\n" for line in train.read_text().split() if line.startswith("bricks/")))
    pipe = Pipeline(_config(root, **{"dataset.train_list": str(one), "dataset.test_list": str(test)}),
                    tmp_path / "ws")
    with pytest.raises(ValueError, match="only one class"):
        pipe.run_all()
    assert sum(pipe.computed.values()) == 0


def test_a_single_class_dataset_is_refused_at_the_door(dataset, tmp_path):
    root, *_ = dataset
    for cls in CLASSES[1:]:
        shutil.rmtree(root / cls)
    pipe = Pipeline(_config(root, **{"dataset.n_train": 4}), tmp_path / "ws")
    with pytest.raises(ValueError, match="class"):
        pipe.run_all()
    assert sum(pipe.computed.values()) == 0

"""DescriptorStore: resumable after cancel and crash, bad files reported, nothing cached lost."""
import json
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

import fvstudio.engine.descriptors as descriptors
from fvstudio.data.cache import DescriptorStore, ExtractionReport
from fvstudio.data.datasets import open_dataset
from fvstudio.data.images import load_image
from fvstudio.engine.progress import CancelToken, Cancelled

# Light settings keep the whole sample dataset's store small and fast (the logic is the same).
LIGHT = {"step": 8, "scales": 2}


def _same(a, b):
    assert a.image_shape == b.image_shape
    for name in ("descriptors", "positions", "scales", "norms"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == np.float32 and x.shape == y.shape and np.array_equal(x, y), name


def _texture(path: Path, h=60, w=80, seed=0):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur((rng.random((h, w, 3)) * 255).astype(np.uint8), (0, 0), 1.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imencode(path.suffix, img)[1].tofile(str(path))
    return path


@pytest.fixture(scope="module")
def sample_textures(sample_data_dir):
    return open_dataset(sample_data_dir / "textures")


@pytest.fixture(scope="module")
def reference(sample_textures, tmp_path_factory):
    """An uninterrupted single-threaded run over the whole sample dataset."""
    ws = tmp_path_factory.mktemp("ref")
    store = DescriptorStore(ws, sample_textures, "sift", LIGHT, max_pixels=40_000)
    rep = store.extract(n_jobs=1)
    assert rep.n_extracted == len(sample_textures) and rep.failures == [] and rep.empty == []
    return store


def test_cancel_half_way_then_resume_is_identical(sample_textures, reference, tmp_path):
    n = len(sample_textures)
    token = CancelToken()
    seen = []

    def on_progress(p):
        seen.append(p.done)
        if p.done >= n // 2:
            token.cancel()

    store = DescriptorStore(tmp_path, sample_textures, "sift", LIGHT, max_pixels=40_000)
    assert store.key == reference.key
    with pytest.raises(Cancelled):
        store.extract(n_jobs=2, progress=on_progress, cancel=token)
    done_after_cancel = int((store.counts() >= 0).sum())
    assert n // 2 <= done_after_cancel < n
    assert seen == sorted(seen) and not store.is_complete()
    index = json.loads((store.folder / "index.json").read_text())
    assert len(index["entries"]) == done_after_cancel  # index consistent with the finished images

    # resume in a "new process": a fresh store object over the same workspace
    token.reset()
    resumed = DescriptorStore(tmp_path, sample_textures, "sift", LIGHT, max_pixels=40_000)
    rep = resumed.extract(n_jobs=2, progress=lambda p: None)
    assert rep.n_cached == done_after_cancel and rep.n_extracted == n - done_after_cancel
    assert resumed.is_complete() and rep.failures == []
    assert rep.n_descriptors == int(reference.counts().sum())
    for i in range(n):
        _same(resumed.get(i), reference.get(i))
    assert np.array_equal(resumed.sample(5000, seed=3), reference.sample(5000, seed=3))
    again = DescriptorStore(tmp_path, sample_textures, "sift", LIGHT, max_pixels=40_000).extract()
    assert again.n_cached == n and again.n_extracted == 0


def test_crash_mid_run_keeps_finished_images(sample_textures, reference, tmp_path, monkeypatch):
    real = descriptors.extract_channel
    calls = {"n": 0}
    lock = threading.Lock()

    def dying(name, rgb, **params):
        with lock:
            calls["n"] += 1
            k = calls["n"]
        if k == 30:  # the probe is call 1; the process "dies" in the middle of an image
            raise KeyboardInterrupt
        return real(name, rgb, **params)

    idx = np.arange(0, len(sample_textures), 4)  # 80 images across all classes
    store = DescriptorStore(tmp_path, sample_textures, "sift", LIGHT, max_pixels=40_000)
    monkeypatch.setattr(descriptors, "extract_channel", dying)
    with pytest.raises(KeyboardInterrupt):
        store.extract(idx, n_jobs=2)
    monkeypatch.setattr(descriptors, "extract_channel", real)
    # a hard crash leaves no up-to-date index, maybe a temp file, maybe a file cut short
    (store.folder / "index.json").unlink()
    images = store.folder / "images"
    junk = images / ".deadbeef.npy.tmp"
    junk.write_bytes(b"half a file")
    os.utime(junk, (0, 0))
    npys = sorted(images.glob("*.npy"))
    assert 20 <= len(npys) < idx.size
    with open(npys[0], "r+b") as fh:
        fh.truncate(200)

    resumed = DescriptorStore(tmp_path, sample_textures, "sift", LIGHT, max_pixels=40_000)
    assert int((resumed.counts(idx) >= 0).sum()) == len(npys) - 1  # the cut file is redone
    rep = resumed.extract(idx, n_jobs=2)
    assert rep.n_cached == len(npys) - 1 and not junk.exists() and rep.failures == []
    for i in idx:
        _same(resumed.get(i), reference.get(i))


def test_bad_files_reported_skipped_and_nothing_lost(tmp_path):
    root = tmp_path / "data"
    good = [_texture(root / "a" / f"g{i}.png", seed=i) for i in range(3)]
    good.append(_texture(root / "b" / "ünïcode ok.jpg", seed=9))
    (root / "b" / "zero.jpg").write_bytes(b"")
    full = _texture(root / "b" / "cut.jpg", 90, 120, seed=4).read_bytes()
    (root / "b" / "cut.jpg").write_bytes(full[: len(full) // 2])
    (root / "b" / "text.png").write_text("not an image at all")
    _texture(root / "b" / "tiny.png", 10, 12)
    ds = open_dataset(root)
    assert len(ds) == 8
    ws = tmp_path / "ws"
    store = DescriptorStore(ws, ds, "lcs", {})
    with pytest.raises(ValueError, match="run extract"):
        store.get(0)
    rep = store.extract()
    assert isinstance(rep, ExtractionReport)
    failures = {p.name: r for p, r in rep.failures}
    assert set(failures) == {"zero.jpg", "cut.jpg", "text.png"}
    assert "0 bytes" in failures["zero.jpg"] and "truncated JPEG" in failures["cut.jpg"]
    assert "not an image" in failures["text.png"]
    assert [p.name for p, _ in rep.empty] == ["tiny.png"] and "10x12" in rep.empty[0][1]
    tiny = store.get(ds.index_of("b/tiny.png"))
    assert len(tiny) == 0 and tiny.image_shape == (10, 12) and tiny.descriptors.shape == (0, 96)
    assert store.get(ds.index_of("b/zero.jpg")) is None
    assert store.is_complete()
    kept = {i: store.get(ds.index_of(i)) for i in ("a/g0.png", "b/ünïcode ok.jpg")}
    assert all(len(v) > 0 for v in kept.values())
    assert rep.n_descriptors == sum(len(store.get(ds.index_of(p.relative_to(root).as_posix())))
                                    for p in good)
    X = store.sample(10**6, seed=0)
    assert X.shape == (rep.n_descriptors, 96)  # all of them, failed/empty images contribute nothing

    # failures are remembered (not retried) until the file changes; fixing one redoes only it
    assert store.extract().n_extracted == 0
    _texture(root / "b" / "cut.jpg", 90, 120, seed=4)
    fresh = DescriptorStore(ws, open_dataset(root), "lcs", {})
    rep2 = fresh.extract()
    assert rep2.n_extracted == 1 and rep2.n_cached == 7 and len(rep2.failures) == 2
    assert len(fresh.get(ds.index_of("b/cut.jpg"))) > 0
    for name, dd in kept.items():
        _same(fresh.get(ds.index_of(name)), dd)

    # a crash after re-extracting a changed image but before the summary index was rewritten:
    # the newer per-image entry wins over the stale summary
    stale_index = (fresh.folder / "index.json").read_bytes()
    before = fresh.content_key()
    _texture(root / "a" / "g1.png", 50, 50, seed=21)
    changed = DescriptorStore(ws, open_dataset(root), "lcs", {})
    assert changed.extract().n_extracted == 1
    assert changed.key == fresh.key and changed.content_key() != before
    assert changed.content_key([0]) == fresh.content_key([0])
    new_g1 = changed.get(ds.index_of("a/g1.png"))
    (fresh.folder / "index.json").write_bytes(stale_index)
    os.utime(fresh.folder / "index.json", ns=(1, 1))
    reopened = DescriptorStore(ws, open_dataset(root), "lcs", {})
    assert reopened.is_complete()
    _same(reopened.get(ds.index_of("a/g1.png")), new_g1)
    assert new_g1.image_shape == (50, 50)

    # adding an image to the dataset keeps the cache of all the others
    _texture(root / "a" / "g9.png", seed=11)
    bigger = open_dataset(root)
    rep3 = DescriptorStore(ws, bigger, "lcs", {}).extract()
    assert rep3.n_extracted == 1 and rep3.n_cached == 8


def test_keys_params_and_sampling(tmp_path):
    root = tmp_path / "data"
    for i in range(4):
        _texture(root / ("a" if i < 2 else "b") / f"{i}.png", 70, 90, seed=i)
    ds = open_dataset(root)
    s1 = DescriptorStore(tmp_path / "ws", ds, "sift", {"step": 6})
    assert s1.key == DescriptorStore(tmp_path / "ws", ds, "sift", {"step": 6}).key
    assert s1.key != DescriptorStore(tmp_path / "ws", ds, "sift", {"step": 8}).key
    assert s1.key != DescriptorStore(tmp_path / "ws", ds, "lcs", {"step": 6}).key
    assert s1.key != DescriptorStore(tmp_path / "ws", ds, "sift", {"step": 6}, max_pixels=1000).key
    assert DescriptorStore(tmp_path / "ws", ds, "sift", {"step": 6, "max_pixels": 1000}).key == \
        DescriptorStore(tmp_path / "ws", ds, "sift", {"step": 6}, max_pixels=1000).key
    with pytest.raises(ValueError, match="channel"):
        DescriptorStore(tmp_path / "ws", ds, "hog", {})
    with pytest.raises(ValueError, match="does not take"):
        DescriptorStore(tmp_path / "ws", ds, "lcs", {"window": "flat"}).extract()
    with pytest.raises(ValueError, match="indices"):
        s1.extract([7])

    updates = []
    rep = s1.extract(progress=updates.append)
    assert updates[-1].done == updates[-1].total == 4 and len(updates) == 5
    assert {u.values.get("status") for u in updates[1:]} == {"ok"}
    direct = descriptors.extract_channel("sift", load_image(ds.paths[2]), step=6)
    _same(s1.get(2), direct)
    assert s1.dim == 128 and rep.n_descriptors == int(s1.counts().sum())

    a = s1.sample(300, seed=1)
    assert a.shape == (300, 128) and a.dtype == np.float32
    assert np.array_equal(a, s1.sample(300, seed=1)) and not np.array_equal(a, s1.sample(300, seed=2))
    rows_b = np.concatenate([s1.get(i).descriptors for i in (2, 3)])
    only_b = s1.sample(200, seed=0, indices=[2, 3])
    assert np.array_equal(only_b, s1.sample(200, seed=0, indices=[3, 2, 3]))  # a set of images
    assert s1.extract([1, 1, 2]).n_requested == 2
    assert all((rows_b == r).all(axis=1).any() for r in only_b)  # drawn from those images only
    assert len({r.tobytes() for r in only_b}) == 200                # without replacement
    with pytest.raises(ValueError, match="no cached descriptors"):
        DescriptorStore(tmp_path / "ws2", ds, "sift", {}).sample(10)


def test_float16_storage_halves_disk_and_returns_float32(tmp_path):
    root = tmp_path / "data"
    for i in range(2):
        _texture(root / "a" / f"{i}.png", 80, 100, seed=i)
    ds = open_dataset(root)
    s32 = DescriptorStore(tmp_path / "ws", ds, "sift", {"step": 5})
    s16 = DescriptorStore(tmp_path / "ws", ds, "sift", {"step": 5}, descriptor_dtype="float16")
    assert s16.key != s32.key
    s32.extract()
    s16.extract()
    for i in range(2):
        a, b = s32.get(i), s16.get(i)
        assert b.descriptors.dtype == np.float32
        assert np.allclose(a.descriptors, b.descriptors, rtol=1e-3, atol=1e-4)
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.norms, b.norms)
    size = {s: sum(p.stat().st_size for p in (s.folder / "images").glob("*.npy")) for s in (s32, s16)}
    assert size[s16] < 0.6 * size[s32]
    assert s16.sample(50, seed=0).dtype == np.float32
    with pytest.raises(ValueError, match="descriptor_dtype"):
        DescriptorStore(tmp_path / "ws", ds, "sift", {}, descriptor_dtype="int8")

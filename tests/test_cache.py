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
    assert rep.n_extracted == len(sample_textures) and rep.failures == []
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
    npys = sorted(images.glob("*.npy"))
    assert 20 <= len(npys) < idx.size
    with open(npys[0], "r+b") as fh:
        fh.truncate(200)
    # orphans of killed writers, as atomic_path names them: a dead pid on this host (removed at
    # once), and the former name form without host/pid, 10 min old (removed by age)
    from fvstudio.engine.serialization import _HOST_TAG
    junk = images / f".0123456789abcdef0123.npy.{_HOST_TAG}-999999999.k2j3l4m5.tmp.npy"
    junk.write_bytes(b"half a file")
    old_junk = images / ".0123456789abcdef0123.json.k2j3l4m5.tmp.json"
    old_junk.write_bytes(b"{")
    os.utime(old_junk, (0, 0))
    live = images / f".0123456789abcdef0123.npy.{_HOST_TAG}-1.k2j3l4m5.tmp.npy"  # pid 1 lives: kept
    live.write_bytes(b"in progress")

    resumed = DescriptorStore(tmp_path, sample_textures, "sift", LIGHT, max_pixels=40_000)
    assert int((resumed.counts(idx) >= 0).sum()) == len(npys) - 1  # the cut file is redone
    rep = resumed.extract(idx, n_jobs=2)
    assert rep.n_cached == len(npys) - 1 and not junk.exists() and not old_junk.exists() and live.exists()
    assert rep.failures == [] and len(rep.repaired) == 1 and "200 bytes" in rep.repaired[0][1]
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
    assert set(failures) == {"zero.jpg", "cut.jpg", "text.png", "tiny.png"}
    assert "0 bytes" in failures["zero.jpg"] and "truncated JPEG" in failures["cut.jpg"]
    assert "not an image" in failures["text.png"]
    # an image smaller than one patch is a failure with a reason, never an empty descriptor set
    assert "no descriptors" in failures["tiny.png"] and "10x12" in failures["tiny.png"]
    assert store.get(ds.index_of("b/tiny.png")) is None and store.counts([ds.index_of("b/tiny.png")])[0] == -1
    assert store.get(ds.index_of("b/zero.jpg")) is None
    assert sorted(store.failures()) == sorted((ds.ids[ds.index_of(f"b/{n}")], r) for n, r in failures.items())
    assert store.is_complete()
    kept = {i: store.get(ds.index_of(i)) for i in ("a/g0.png", "b/ünïcode ok.jpg")}
    assert all(len(v) > 0 for v in kept.values())
    assert rep.n_descriptors == sum(len(store.get(ds.index_of(p.relative_to(root).as_posix())))
                                    for p in good)
    X = store.sample(10**6, seed=0)
    assert X.shape == (rep.n_descriptors, 96)  # all of them, failed/empty images contribute nothing

    # failed images are retried on every extract (cheap); fixing one redoes only it and the failures
    again = store.extract()
    assert again.n_extracted == again.n_retried == 4 and again.n_cached == 4 and len(again.failures) == 4
    _texture(root / "b" / "cut.jpg", 90, 120, seed=4)
    fresh = DescriptorStore(ws, open_dataset(root), "lcs", {})
    rep2 = fresh.extract()
    assert rep2.n_extracted == 4 and rep2.n_retried == 4 and rep2.n_cached == 4 and len(rep2.failures) == 3
    assert len(fresh.get(ds.index_of("b/cut.jpg"))) > 0
    for name, dd in kept.items():
        _same(fresh.get(ds.index_of(name)), dd)

    # a crash after re-extracting a changed image but before the summary index was rewritten:
    # the newer per-image entry wins over the stale summary
    stale_index = (fresh.folder / "index.json").read_bytes()
    before = fresh.content_key()
    _texture(root / "a" / "g1.png", 50, 50, seed=21)
    changed = DescriptorStore(ws, open_dataset(root), "lcs", {})
    rc = changed.extract()
    assert rc.n_extracted - rc.n_retried == 1
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
    assert rep3.n_extracted - rep3.n_retried == 1 and rep3.n_cached == 5


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


# ---------------------------------------------------------------- bad inputs and damaged caches (issue #13)
def _deny_open(monkeypatch, paths):
    """Simulate missing read permission (the tests run as root, who reads a chmod 000 file anyway)."""
    import errno

    real_open = os.open
    denied = {os.fspath(p) for p in paths}

    def fake(path, *args, **kwargs):
        if os.fspath(path) in denied:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake)


def test_every_unreadable_input_is_a_failure_with_a_reason(tmp_path, monkeypatch):
    import signal

    root = tmp_path / "data"
    for i in range(2):
        _texture(root / "a" / f"ok{i}.png", seed=i)
    good_jpg = _texture(root / "b" / "ok.jpg", 90, 120, seed=3).read_bytes()
    b = root / "b"
    (b / "zero.jpg").write_bytes(b"")
    (b / "cut.jpg").write_bytes(good_jpg[: len(good_jpg) // 2])
    (b / "text.jpg").write_text("not an image\n" * 20)
    os.symlink(tmp_path / "nowhere.jpg", b / "dangling.jpg")
    os.symlink(b / "loop_b.jpg", b / "loop_a.jpg")
    os.symlink(b / "loop_a.jpg", b / "loop_b.jpg")
    os.mkfifo(b / "fifo.jpg")
    _texture(b / "one.png", 1, 1)
    _texture(b / "ten.png", 10, 10)
    (b / "motion.jpg").write_bytes(good_jpg + b"\x00\x00\x00\x18ftypmp42" + os.urandom(5000))
    locked = _texture(b / "locked.png", seed=7)
    ds = open_dataset(root)
    _deny_open(monkeypatch, [locked])
    store = DescriptorStore(tmp_path / "ws", ds, "sift", {"step": 8})
    old = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("extract blocked")))
    signal.alarm(60)  # the FIFO used to block the run forever
    try:
        rep = store.extract(n_jobs=2)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    want = {"zero.jpg": "0 bytes", "cut.jpg": "truncated JPEG", "text.jpg": "not an image",
            "dangling.jpg": "dangling symbolic link", "loop_a.jpg": "symbolic link loop",
            "loop_b.jpg": "symbolic link loop", "fifo.jpg": "FIFO", "one.png": "1x1 image",
            "ten.png": "10x10 image", "locked.png": "no permission"}
    got = {Path(p).name: r for p, r in rep.failures}
    assert set(got) == set(want)
    for name, reason in want.items():
        assert reason in got[name], (name, got[name])
    assert {i.split("/")[-1]: r for i, r in store.failures()} == got  # also readable later
    for name in want:
        assert store.get(ds.index_of(f"b/{name}")) is None          # never descriptors
    assert store.counts([ds.index_of(f"b/{n}") for n in want]).tolist() == [-1] * len(want)
    ok = [i for i in range(len(ds)) if Path(ds.ids[i]).name not in want]
    assert {Path(ds.ids[i]).name for i in ok} == {"ok0.png", "ok1.png", "ok.jpg", "motion.jpg"}
    assert all(len(store.get(i)) > 0 for i in ok)
    _same(store.get(ds.index_of("b/motion.jpg")), store.get(ds.index_of("b/ok.jpg")))  # trailer ignored
    assert store.sample(10**6).shape[0] == rep.n_descriptors == int(store.counts(ok).sum())


def test_permission_failure_is_retried_after_chmod(tmp_path, monkeypatch):
    root = tmp_path / "data"
    paths = [_texture(root / "a" / f"{i}.png", seed=i) for i in range(3)]
    ds = open_dataset(root)
    store = DescriptorStore(tmp_path / "ws", ds, "lcs", {})
    with monkeypatch.context() as m:
        _deny_open(m, [paths[1]])
        rep = store.extract()
        assert [Path(p).name for p, _ in rep.failures] == ["1.png"] and "permission" in rep.failures[0][1]
    digest_failed = store.content_digest()
    st = os.stat(paths[1])
    # "chmod": the file is readable again, its size and mtime unchanged
    assert (st.st_size, st.st_mtime_ns) == tuple(json.loads(
        (store.folder / "images" / f"{__import__('hashlib').sha1(b'a/1.png').hexdigest()[:20]}.json").read_text()
    )["stamp"])
    fresh = DescriptorStore(tmp_path / "ws", ds, "lcs", {})
    rep2 = fresh.extract()
    assert rep2.failures == [] and rep2.n_retried == 1 and rep2.n_extracted == 1 and rep2.n_cached == 2
    assert fresh.failures() == [] and len(fresh.get(1)) > 0
    assert fresh.content_digest() != digest_failed


def test_content_digest_follows_what_the_store_holds(tmp_path):
    import time as _time

    root = tmp_path / "data"
    paths = [_texture(root / ("a" if i < 2 else "b") / f"{i}.png", seed=i) for i in range(4)]
    ds = open_dataset(root)
    ws = tmp_path / "ws"
    store = DescriptorStore(ws, ds, "lcs", {})
    d_missing = store.content_digest()
    store.extract()
    d0 = store.content_digest()
    assert d0 != d_missing and d0 == store.content_digest() == DescriptorStore(ws, ds, "lcs", {}).content_digest()
    part = store.content_digest([0, 1])
    assert part != d0 and part == store.content_digest(np.array([0, 1]))
    # touched, not changed: extracted again (stat changed), but the same descriptors -> same digest
    t = _time.time() + 5
    os.utime(paths[2], (t, t))
    s2 = DescriptorStore(ws, ds, "lcs", {})
    assert s2.extract().n_extracted == 1 and s2.content_digest() == d0
    # fixed in place (same name, other pixels): the store key stays, the digest changes
    _texture(paths[2], seed=42)
    s3 = DescriptorStore(ws, ds, "lcs", {})
    s3.extract()
    assert s3.key == store.key and s3.content_digest() != d0
    assert s3.content_digest([0, 1]) == part and s3.content_digest([2]) != store.content_digest([2])
    # a new failure changes it as well
    paths[3].write_bytes(b"")
    s4 = DescriptorStore(ws, ds, "lcs", {})
    d3 = s3.content_digest()
    s4.extract()
    assert s4.failures([3]) == [(ds.ids[3], "file is empty (0 bytes)")] and s4.failures([0, 1, 2]) == []
    assert s4.content_digest() != d3 and s4.content_digest([0, 1, 2]) == s3.content_digest([0, 1, 2])


def test_damaged_cache_entries_are_redone_with_a_warning(tmp_path, caplog):
    import logging

    root = tmp_path / "data"
    for i in range(4):
        _texture(root / "a" / f"{i}.png", 70, 90, seed=i)
    ds = open_dataset(root)
    ws = tmp_path / "ws"
    store = DescriptorStore(ws, ds, "sift", {"step": 6})
    store.extract()
    ref = [store.get(i) for i in range(4)]
    X = store.sample(10**6)
    images = store.folder / "images"
    name = {i: __import__("hashlib").sha1(ds.ids[i].encode()).hexdigest()[:20] for i in range(4)}
    # 0: garbled in the middle (same size: only the checksum sees it); 1: truncated;
    # 2: garbled .npy header; 3: garbled .json entry
    p0 = images / f"{name[0]}.npy"
    data = bytearray(p0.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    p0.write_bytes(bytes(data))
    p1 = images / f"{name[1]}.npy"
    p1.write_bytes(p1.read_bytes()[:1000])
    p2 = images / f"{name[2]}.npy"
    p2.write_bytes(b"garbage!" * 8 + p2.read_bytes()[64:])
    (images / f"{name[3]}.json").write_text('{"id": "a/3.p')
    (store.folder / "index.json").unlink()  # as after a crash: the per-image entries are read

    caplog.set_level(logging.WARNING, logger="fvstudio.data.cache")
    s = DescriptorStore(ws, ds, "sift", {"step": 6})
    assert np.array_equal(s.counts() >= 0, [True, False, True, False])  # size checks on open
    msgs = " ".join(r.getMessage() for r in caplog.records)
    assert "a/1.png" in msgs and "damaged" in msgs and f"{name[3]}.json is unreadable" in msgs
    caplog.clear()
    _same(s.get(0), ref[0])  # checksum mismatch: extracted again inside get()
    assert "a/0.png" in caplog.text and "checksum" in caplog.text
    caplog.clear()
    rep = s.extract()
    assert rep.n_extracted == 2 and [Path(p).name for p, _ in rep.repaired] == ["1.png"]
    assert np.array_equal(s.sample(10**6), X)  # the garbled header of 2 is found and redone while sampling
    assert "a/2.png" in caplog.text
    for i in range(4):
        _same(s.get(i), ref[i])
    assert DescriptorStore(ws, ds, "sift", {"step": 6}).extract().n_cached == 4


def test_disk_full_is_one_clear_error_and_extraction_resumes(sample_textures, reference, tmp_path, monkeypatch):
    import contextlib
    import errno

    from fvstudio.data import cache
    from fvstudio.engine.serialization import DiskFullError

    idx = np.arange(0, len(sample_textures), 10)
    real = cache.atomic_open
    budget = {"files": 12}  # the 13th file write finds the disk full
    lock = threading.Lock()

    class _Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

    @contextlib.contextmanager
    def filling(path, **kw):
        with real(path, **kw) as fh:
            with lock:
                budget["files"] -= 1
                full = budget["files"] < 0
            yield _Full(fh) if full else fh

    ws = tmp_path / "ws"
    store = DescriptorStore(ws, sample_textures, "sift", LIGHT, max_pixels=40_000)
    store._ensure_open()  # store.json written before the disk fills up
    monkeypatch.setattr(cache, "atomic_open", filling)
    with pytest.raises(DiskFullError) as ei:
        store.extract(idx, n_jobs=2)
    msg = str(ei.value)
    assert str(ws) in msg and "free" in msg and "needed" in msg and "run again" in msg
    assert ei.value.needed and ei.value.needed > 0
    assert not [p for p in (store.folder / "images").iterdir() if p.name.startswith(".")]  # no temporaries
    monkeypatch.setattr(cache, "atomic_open", real)
    resumed = DescriptorStore(ws, sample_textures, "sift", LIGHT, max_pixels=40_000)
    rep = resumed.extract(idx, n_jobs=2)
    assert 1 <= rep.n_cached < idx.size and rep.failures == [] and resumed.is_complete(idx)
    for i in idx:
        _same(resumed.get(i), reference.get(i))

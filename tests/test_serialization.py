"""Model files: npz round trip without pickles, kind checks, and atomic writes that leave nothing behind."""
import numpy as np
import pytest

from fvstudio.engine.serialization import atomic_path, atomic_save_npz, atomic_write_bytes, load_npz


def test_npz_round_trip_and_kind(tmp_path):
    path = tmp_path / "m" / "gmm.npz"
    atomic_save_npz(path, {"w": np.arange(3, dtype=np.float32)}, {"kind": "gmm", "k": 3})
    arrays, meta = load_npz(path, kind="gmm")
    np.testing.assert_array_equal(arrays["w"], [0, 1, 2])
    assert meta == {"kind": "gmm", "k": 3}
    with pytest.raises(ValueError, match="holds a 'gmm' model, not a 'pca'"):
        load_npz(path, kind="pca")


def test_bad_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_npz(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz is not a readable fvstudio model file"):
        load_npz(junk)
    with pytest.raises(ValueError, match="must end in .npz"):
        atomic_save_npz(tmp_path / "model.bin", {})


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "data.npy"
    atomic_write_bytes(path, b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            np.save(tmp, np.zeros(10))
            assert tmp.suffix == ".npy"  # np.save must not append a second suffix
            raise KeyboardInterrupt  # a cancel or Ctrl-C half-way
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npy"]
    with atomic_path(path) as tmp:
        np.save(tmp, np.arange(4))
    np.testing.assert_array_equal(np.load(path), np.arange(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npy"]


def test_damaged_npz_is_a_named_damaged_file_error(tmp_path):
    import zipfile

    from fvstudio.engine.serialization import DamagedFileError

    path = tmp_path / "pca.npz"
    atomic_save_npz(path, {"w": np.arange(1000, dtype=np.float64)}, {"kind": "pca"})
    good = path.read_bytes()
    cases = {"truncated": good[: len(good) // 2],
             "garbled": good[:200] + bytes(b ^ 0x55 for b in good[200:400]) + good[400:],
             "cut_to_header": good[:10]}
    for name, data in cases.items():
        p = tmp_path / f"{name}.npz"
        p.write_bytes(data)
        with pytest.raises(DamagedFileError) as ei:
            load_npz(p, kind="pca")
        assert p.name in str(ei.value) and "recompute" in str(ei.value), name
        assert isinstance(ei.value, ValueError) and not isinstance(ei.value, zipfile.BadZipFile)


def test_disk_full_is_one_clear_error_and_leaves_no_temp(tmp_path, monkeypatch):
    import errno

    from fvstudio.engine import serialization
    from fvstudio.engine.serialization import DiskFullError

    path = tmp_path / "out" / "model.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(DiskFullError) as ei:
        with serialization.atomic_open(path) as fh:
            fh.write(b"x" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
    msg = str(ei.value)
    assert str(path.parent) in msg and "free" in msg and "no space left" in msg
    assert ei.value.errno == errno.ENOSPC and isinstance(ei.value, OSError)
    assert path.read_bytes() == b"old" and [p.name for p in path.parent.iterdir()] == ["model.bin"]


def test_temporary_names_and_stale_rule(tmp_path, monkeypatch):
    import os
    import time

    from fvstudio.engine import serialization as ser

    target = tmp_path / "a.npy"
    with ser.atomic_path(target) as tmp:
        assert ser.is_temporary_name(tmp.name) and f"-{os.getpid()}." in tmp.name
        tmp.write_bytes(b"live")
        assert not ser.is_stale_temporary(tmp)          # this process's write in progress
        assert ser.remove_stale_temporaries(tmp_path) == []
    assert not ser.is_stale_temporary(target)            # not a temporary name: never touched

    host = ser._HOST_TAG
    def make(name, age=0.0):
        p = tmp_path / name
        p.write_bytes(b"x" * 10)
        t = time.time() - age
        os.utime(p, (t, t))
        return p

    mine_orphan = make(f".b.npy.{host}-{os.getpid()}.abcdefgh.tmp.npy")   # an earlier process with our pid
    dead = make(f".c.json.{host}-999999999.abcdefgh.tmp.json")            # pid that cannot exist
    live_other = make(f".d.npy.{host}-1.abcdefgh.tmp.npy")                # pid 1 is alive
    old_live_other = make(f".e.npy.{host}-1.abcdefgh.tmp.npy", age=ser.STALE_TMP_MAX_AGE + 10)
    other_host = make(".f.npy.000000-12.abcdefgh.tmp.npy", age=3600)
    legacy_new = make(".g.npy.abcdefgh.tmp.npy")
    legacy_old = make(".h.npy.abcdefgh.tmp.npy", age=ser.STALE_TMP_SECONDS + 10)
    user_file = make(".hidden_notes.tmp", age=10**6)
    removed = {p.name for p in ser.remove_stale_temporaries(tmp_path)}
    assert removed == {mine_orphan.name, dead.name, old_live_other.name, legacy_old.name}
    for p in (live_other, other_host, legacy_new, user_file, target):
        assert p.exists()

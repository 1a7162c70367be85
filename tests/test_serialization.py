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

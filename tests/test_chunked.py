"""ChunkedArray: rows in zarr chunks, numpy-like reads, resume by identity, missing / cut / garbled chunks."""
from __future__ import annotations

import numpy as np
import pytest

from fvstudio.data.chunked import ChunkedArray, ChunkError


@pytest.fixture
def filled(tmp_path):
    a = np.random.default_rng(0).normal(size=(103, 17)).astype(np.float32)
    z = ChunkedArray.create(tmp_path / "x.zarr", a.shape, np.float32, 10, {"key": "k1"})
    assert z.missing_blocks() == list(range(11))
    for b in range(z.n_blocks):
        z.write_block(b, a[z.block_rows(b)])
    return a, tmp_path / "x.zarr"


def test_reads_like_the_array_it_holds(filled):
    a, path = filled
    z = ChunkedArray.open(path)
    idx = np.random.default_rng(1).integers(0, 103, 60)
    assert z.shape == a.shape and z.dtype == np.float32 and len(z) == 103 and z.ndim == 2
    assert np.array_equal(z[idx], a[idx]) and np.array_equal(z[5:97], a[5:97]) and np.array_equal(z[3:50:4], a[3:50:4])
    assert np.array_equal(z[7], a[7]) and np.array_equal(z[-1], a[-1]) and z[5, 2] == a[5, 2]
    assert np.array_equal(z[:, 3], a[:, 3]) and np.array_equal(np.asarray(z), a)
    assert np.array_equal(z[idx.reshape(6, 10)], a[idx.reshape(6, 10)])
    with pytest.raises(IndexError):
        z[np.array([103])]


def test_the_same_identity_resumes_another_starts_anew(filled):
    a, path = filled
    again = ChunkedArray.create(path, a.shape, np.float32, 10, {"key": "k1"})
    assert again.missing_blocks() == [] and np.array_equal(np.asarray(again), a)
    other = ChunkedArray.create(path, a.shape, np.float32, 10, {"key": "k2"})
    assert other.missing_blocks() == list(range(11))


def test_missing_and_cut_chunks_are_listed_and_never_read_as_zeros(filled):
    a, path = filled
    (path / "c" / "3" / "0").unlink()
    f = path / "c" / "5" / "0"
    f.write_bytes(f.read_bytes()[:50])
    z = ChunkedArray.open(path)
    assert z.missing_blocks() == [3, 5]
    with pytest.raises(ChunkError, match="block 3 .* never written"):
        z[30]
    with pytest.raises(ChunkError, match=r"block 5 .*\(cut short\)"):
        z[50:52]
    assert np.array_equal(z[:30], a[:30])


def test_a_garbled_chunk_fails_its_checksum_and_is_deleted(filled):
    a, path = filled
    f = path / "c" / "2" / "0"
    data = bytearray(f.read_bytes())
    data[40] ^= 0x01
    f.write_bytes(bytes(data))
    z = ChunkedArray.open(path)
    assert z.missing_blocks() == []  # the same size: only the checksum can tell
    with pytest.raises(ChunkError, match="fails its checksum"):
        np.asarray(z)
    assert not f.exists() and z.missing_blocks() == [2]


def test_a_block_of_the_wrong_shape_is_refused(filled, tmp_path):
    z = ChunkedArray.create(tmp_path / "y.zarr", (25, 4), np.float32, 10, {})
    with pytest.raises(ValueError, match="takes"):
        z.write_block(2, np.zeros((10, 4), np.float32))  # the last block has 5 rows
    z.write_block(2, np.ones((5, 4), np.float32))
    assert z.missing_blocks() == [0, 1]


def test_the_learners_read_a_store_lazily_when_it_does_not_fit_the_budget(filled, monkeypatch):
    from fvstudio.engine import rows as rows_mod
    from fvstudio.engine.dual_svm import gram_matrix

    a, path = filled
    z = ChunkedArray.open(path)
    assert isinstance(rows_mod.ArrayRows(z).array, np.ndarray)  # small: read once
    monkeypatch.setattr(rows_mod, "memory_budget", lambda *args, **kw: 1000)
    lazy = rows_mod.ArrayRows(z)
    assert lazy.array is z and lazy.dense_float32() is None
    assert np.array_equal(lazy.rows([5, 99, 0]), a[[5, 99, 0]])
    K = gram_matrix(lazy, block_bytes=2 * 20 * 17 * 4)  # blocks of 20 rows
    assert np.allclose(K, a @ a.T, rtol=1e-5, atol=1e-4)

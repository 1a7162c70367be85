"""load_image / image_size: formats, depths, alpha, palette, resizing, and every failure reason."""
import struct
import zlib

import cv2
import numpy as np
import pytest

from fvstudio.data.images import ImageLoadError, image_size, is_image_file, load_image, target_size


def _write(path, arr, ext=".png", params=()):
    ok, buf = cv2.imencode(ext, arr, list(params))
    assert ok
    buf.tofile(str(path))
    return path


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _palette_png(path, index: np.ndarray, palette: np.ndarray, alpha=None):
    """A colour-type-3 (palette) PNG, 8 bits per index, written by hand (cv2 cannot write them)."""
    h, w = index.shape
    raw = b"".join(b"\x00" + index[r].astype(np.uint8).tobytes() for r in range(h))
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
    data += _png_chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    if alpha is not None:
        data += _png_chunk(b"tRNS", np.asarray(alpha, np.uint8).tobytes())
    data += _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def test_rgb_png_is_exact_and_channels_are_rgb(tmp_path):
    bgr = np.zeros((20, 30, 3), np.uint8)
    bgr[..., 2] = 255  # red in BGR order
    bgr[5, 7] = (10, 20, 30)
    img = load_image(_write(tmp_path / "r.png", bgr))
    assert img.shape == (20, 30, 3) and img.dtype == np.float32
    assert np.allclose(img[0, 0], [1.0, 0.0, 0.0])
    assert np.allclose(img[5, 7], np.array([30, 20, 10]) / 255.0)


def test_gray_16bit_and_jpeg(tmp_path):
    g = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    img = load_image(_write(tmp_path / "g.png", g))
    assert img.shape == (12, 10, 3)
    assert np.allclose(img[..., 0], g / 255.0) and np.array_equal(img[..., 0], img[..., 2])

    g16 = (np.arange(8 * 8, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)
    img16 = load_image(_write(tmp_path / "g16.png", g16))
    assert np.allclose(img16[..., 1], g16 / 65535.0, atol=1e-6)
    assert img16.max() <= 1.0 and img16.max() > 0.9  # 63000 / 65535: 16-bit range was used

    rgb16 = np.zeros((4, 4, 3), np.uint16)
    rgb16[..., 0] = 65535  # blue in BGR
    out = load_image(_write(tmp_path / "c16.png", rgb16))
    assert np.allclose(out[0, 0], [0, 0, 1])

    col = np.full((40, 50, 3), (40, 120, 200), np.uint8)
    j = load_image(_write(tmp_path / "c.jpg", col, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 95)))
    assert np.allclose(j.mean(axis=(0, 1)), np.array([200, 120, 40]) / 255.0, atol=0.02)


def test_rgba_is_composited_on_white(tmp_path):
    bgra = np.zeros((10, 10, 4), np.uint8)
    bgra[..., :3] = 0          # black
    bgra[:, :5, 3] = 255       # left half opaque, right half transparent
    bgra[:, 5:, 3] = 0
    bgra[0, 9, 3] = 128        # half transparent black over white -> mid gray
    img = load_image(_write(tmp_path / "a.png", bgra))
    assert np.allclose(img[:, :5], 0.0)
    assert np.allclose(img[1:, 5:], 1.0)
    assert np.allclose(img[0, 9], 1 - 128 / 255, atol=1e-6)


def test_palette_png_with_and_without_transparency(tmp_path):
    index = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]])
    img = load_image(_palette_png(tmp_path / "p.png", index, palette))
    assert img.shape == (2, 3, 3)
    assert np.allclose(img[0, 0], [1, 0, 0]) and np.allclose(img[0, 1], [0, 1, 0])
    assert np.allclose(img[0, 2], [0, 0, 1]) and np.allclose(img[1, 0], [0, 0, 1])
    # entry 0 fully transparent -> white; others opaque
    img_t = load_image(_palette_png(tmp_path / "pt.png", index, palette, alpha=[0, 255, 255]))
    assert np.allclose(img_t[0, 0], [1, 1, 1]) and np.allclose(img_t[0, 1], [0, 1, 0])


def test_resize_never_upscales_and_keeps_aspect(tmp_path):
    big = (np.random.default_rng(0).random((600, 900, 3)) * 255).astype(np.uint8)
    p = _write(tmp_path / "big.png", big)
    img = load_image(p, max_pixels=100_000)
    h, w = img.shape[:2]
    assert h * w <= 100_000 and h * w > 0.98 * 100_000
    assert abs(w / h - 1.5) < 0.01
    assert load_image(p, max_pixels=None).shape == (600, 900, 3)
    small = _write(tmp_path / "s.png", big[:50, :60])
    assert load_image(small, max_pixels=100_000).shape == (50, 60, 3)
    # area averaging: a uniform image stays uniform, values stay in [0, 1]
    flat = _write(tmp_path / "flat.png", np.full((400, 400), 77, np.uint8))
    f = load_image(flat, max_pixels=10_000)
    assert f.shape == (100, 100, 3) and np.allclose(f, 77 / 255, atol=1e-6)
    for hh, ww, m in [(1000, 3, 500), (7, 11, 50), (3000, 4000, 100_000)]:
        th, tw = target_size(hh, ww, m)
        assert 1 <= th <= hh and 1 <= tw <= ww and th * tw <= m
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(p, max_pixels=-5)


def test_large_jpeg_reduced_decode_matches_full_decode(tmp_path):
    rng = np.random.default_rng(3)
    small = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
    big = cv2.resize(small, (1600, 1200), interpolation=cv2.INTER_CUBIC)  # detail at ~20 px
    p = _write(tmp_path / "big.jpg", big, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 92))
    img = load_image(p, max_pixels=100_000)  # decoded at 1/2 (800x600), then area-shrunk
    full = cv2.imdecode(np.fromfile(str(p), np.uint8), cv2.IMREAD_COLOR)
    ref = cv2.resize(full, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_AREA)[:, :, ::-1] / 255.0
    assert img.shape[0] * img.shape[1] <= 100_000
    assert np.abs(img - ref).mean() < 2.0 / 255
    assert load_image(p, max_pixels=None).shape == (1200, 1600, 3)


def test_rgba_resize_path(tmp_path):
    bgra = np.zeros((300, 400, 4), np.uint8)
    bgra[..., 3] = 0  # fully transparent -> white everywhere, also after resizing
    img = load_image(_write(tmp_path / "t.png", bgra), max_pixels=3000)
    assert img.shape[0] * img.shape[1] <= 3000 and np.allclose(img, 1.0)


def test_non_ascii_path(tmp_path):
    d = tmp_path / "données" / "猫"
    d.mkdir(parents=True)
    p = _write(d / "ÿ-图像.png", np.full((5, 6, 3), 200, np.uint8))
    img = load_image(p)
    assert img.shape == (5, 6, 3) and np.allclose(img, 200 / 255)
    assert image_size(p) == (5, 6)


def test_image_size_from_headers(tmp_path):
    a = np.zeros((37, 53, 3), np.uint8)
    for ext in (".png", ".jpg", ".bmp"):
        assert image_size(_write(tmp_path / f"x{ext}", a, ext)) == (37, 53)
    assert image_size(_write(tmp_path / "x.tif", a, ".tif")) == (37, 53)


def test_is_image_file():
    assert is_image_file("a/B.JPG") and is_image_file("x.png")
    assert not is_image_file(".hidden.jpg") and not is_image_file("notes.txt")


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "truncated_jpeg", "truncated_png",
                                  "text", "garbage_jpeg_header"])
def test_failures_name_file_and_reason(tmp_path, case):
    rng = np.random.default_rng(1)
    noisy = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    if case == "missing":
        p, reason = tmp_path / "nope.jpg", "does not exist"
    elif case == "directory":
        p, reason = tmp_path, "directory"
    elif case == "empty":
        p, reason = tmp_path / "zero.jpg", "0 bytes"
        p.write_bytes(b"")
    elif case == "truncated_jpeg":
        full = _write(tmp_path / "full.jpg", noisy, ".jpg").read_bytes()
        p, reason = tmp_path / "cut.jpg", "truncated JPEG"
        p.write_bytes(full[: len(full) // 2])
    elif case == "truncated_png":
        full = _write(tmp_path / "full.png", noisy).read_bytes()
        p, reason = tmp_path / "cut.png", "truncated PNG"
        p.write_bytes(full[: len(full) // 3])
    elif case == "text":
        p, reason = tmp_path / "readme.png", "not an image"
        p.write_text("this is not a picture\n" * 10)
    else:
        p, reason = tmp_path / "bad.jpg", "JPEG"
        p.write_bytes(b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 256, 500, dtype=np.uint8)) + b"\xff\xd9")
    with pytest.raises(ImageLoadError) as ei:
        load_image(p)
    assert reason in str(ei.value) and str(p.name) in str(ei.value)
    assert ei.value.path == p and ei.value.reason
    if case in ("missing", "empty", "directory"):
        with pytest.raises(ImageLoadError, match=reason):
            image_size(p)


# ---------------------------------------------------------------- unreadable inputs (issue #13)
def _noisy(h=120, w=160, seed=1):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _expect_failure(p, reason):
    with pytest.raises(ImageLoadError) as ei:
        load_image(p)
    assert reason in ei.value.reason and p.name in str(ei.value)
    return ei.value


def test_links_fifo_and_special_files_are_refused(tmp_path):
    import os
    import signal

    dangling = tmp_path / "dangling.jpg"
    os.symlink(tmp_path / "gone.jpg", dangling)
    _expect_failure(dangling, "dangling symbolic link")
    loop = tmp_path / "loop.jpg"
    os.symlink(tmp_path / "loop2.jpg", loop)
    os.symlink(loop, tmp_path / "loop2.jpg")
    _expect_failure(loop, "symbolic link loop")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    # reading a FIFO with no writer blocks forever: fail the test instead of hanging the suite
    old = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("FIFO read blocked")))
    signal.alarm(10)
    try:
        _expect_failure(fifo, "FIFO")
        with pytest.raises(ImageLoadError, match="FIFO"):
            image_size(fifo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image("/dev/null")
    link_ok = tmp_path / "link_ok.png"
    os.symlink(_write(tmp_path / "real.png", _noisy(20, 30)), link_ok)
    assert load_image(link_ok).shape == (20, 30, 3)  # links to regular files are fine


def test_no_read_permission_simulated(tmp_path, monkeypatch):
    """Tests run as root, who can read a chmod 000 file: the refusal is simulated at os.open."""
    import errno
    import os

    p = _write(tmp_path / "locked.png", _noisy(20, 20))
    real_open = os.open

    def deny(path, *args, **kwargs):
        if os.fspath(path) == os.fspath(p):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    _expect_failure(p, "no permission to read")
    with pytest.raises(ImageLoadError, match="no permission"):
        image_size(p)


def test_no_read_permission_real(tmp_path):
    import os

    p = _write(tmp_path / "locked.png", _noisy(20, 20))
    os.chmod(p, 0)
    try:
        if os.access(p, os.R_OK):
            pytest.skip("running as root (or with CAP_DAC_OVERRIDE): chmod 000 does not stop reading")
        _expect_failure(p, "no permission")
    finally:
        os.chmod(p, 0o644)


def _app1_with_thumbnail(jpeg: bytes, thumb: bytes) -> bytes:
    body = b"Exif\x00\x00" + thumb
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def test_jpeg_trailer_accepted_truncation_still_caught(tmp_path):
    full = _write(tmp_path / "full.jpg", _noisy(), ".jpg").read_bytes()
    ref = load_image(tmp_path / "full.jpg")
    motion = tmp_path / "motion.jpg"  # a motion photo: the JPEG, then a video appended
    motion.write_bytes(full + b"\x00\x00\x00\x18ftypmp42" + bytes(np.random.default_rng(0).integers(0, 256, 30000,
                                                                                                   dtype=np.uint8)))
    assert np.array_equal(load_image(motion), ref)
    # an EXIF thumbnail's own end-of-image marker must not hide the truncation of the main image
    thumb = _write(tmp_path / "t.jpg", _noisy(16, 16, seed=5), ".jpg").read_bytes()
    with_thumb = _app1_with_thumbnail(full, thumb)
    (tmp_path / "thumb_ok.jpg").write_bytes(with_thumb)
    assert np.array_equal(load_image(tmp_path / "thumb_ok.jpg"), ref)
    cut = tmp_path / "thumb_cut.jpg"
    cut.write_bytes(with_thumb[: len(thumb) + 200])  # cut just after the thumbnail
    _expect_failure(cut, "truncated JPEG")


def test_huge_header_refused_before_decoding(tmp_path):
    h, w = 60000, 50000
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
    data += _png_chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + _png_chunk(b"IEND", b"")
    p = tmp_path / "bomb.png"
    p.write_bytes(data)
    err = _expect_failure(p, "image too large")
    assert "50000x60000" in err.reason and "MAX_DECODE_BYTES" in err.reason


def test_out_of_memory_names_file_and_size(tmp_path, monkeypatch):
    import fvstudio.data.images as images

    p = _write(tmp_path / "big.png", _noisy(300, 400))

    def oom(*a, **k):
        raise MemoryError("Unable to allocate 5.1 GiB")

    monkeypatch.setattr(images.cv2, "imdecode", oom)
    err = _expect_failure(p, "not enough memory to decode the 400x300-pixel image")
    assert "5.1 GiB" in err.reason


def test_large_rgba_shrinks_in_strips_and_matches_float_path(tmp_path):
    import tracemalloc

    rng = np.random.default_rng(2)
    h, w = 2400, 1800
    bgra = cv2.resize((rng.random((60, 45, 4)) * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
    p = _write(tmp_path / "rgba.png", bgra, ".png", (cv2.IMWRITE_PNG_COMPRESSION, 1))
    tracemalloc.start()
    try:
        img = load_image(p, max_pixels=100_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    f = bgra.astype(np.float32) / 255
    comp = f[..., 2::-1] * f[..., 3:4] + (1 - f[..., 3:4])
    ref = cv2.resize(comp, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_AREA)
    assert img.shape[0] * img.shape[1] <= 100_000
    assert np.abs(img - ref).max() <= 1.0 / 255  # integer-domain compositing: <= 0.5 LSB + resize rounding
    # numpy/OpenCV arrays: 5.8 MB file + 17 MB decoded + 13 MB composited + strips = ~46 MB; the former
    # float path held several (H, W, 4) float32 copies: 207 MB
    assert peak < 80e6, peak

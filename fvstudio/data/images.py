"""Image loading: any file OpenCV can decode -> (H, W, 3) float32 RGB in [0, 1], at most ``max_pixels``.

The paper resizes every image to at most 100K pixels before extracting descriptors (Sec. 3.1);
:func:`load_image` does that, so every later stage sees images of comparable resolution.

Decoding. The file is read as bytes (``np.fromfile``) and decoded with ``cv2.imdecode``, so paths
with non-ASCII characters work on every platform (``cv2.imread`` fails on them on Windows).

- JPEG files are decoded with ``IMREAD_COLOR``, which applies the EXIF orientation tag (a photo
  taken with the camera on its side comes out upright); JPEG has no alpha and 8 bits per channel.
  A large JPEG is decoded directly at 1/2, 1/4 or 1/8 size (libjpeg's DCT-domain scaling, the
  ``IMREAD_REDUCED_COLOR_*`` flags) when the reduced image still has >= ``4 * max_pixels`` pixels
  (so the final INTER_AREA below still averages >= 2x2 pixels and aliasing stays as low as with a
  full decode), then shrunk as below. A 4000x3000 JPEG loads ~2.5x faster this way; the result
  differs from full decode + INTER_AREA by ~2 grey levels on average (measured on a test image with
  detail near the target resolution, the worst case).
- Every other format is decoded with ``IMREAD_UNCHANGED`` so bit depth and alpha are kept:
  gray (H, W) is replicated to 3 channels; 8-bit values are divided by 255, 16-bit by 65535,
  floating-point images (EXR, TIFF) are clipped to [0, 1]; palette images arrive already expanded
  to BGR(A) by OpenCV's PNG reader.
- An alpha channel is **composited on white**: ``rgb = a * rgb + (1 - a)``. Transparent areas
  thus become uniform white (low contrast, few gradients) instead of whatever colour the encoder
  left under alpha = 0, which is often black and would create spurious edges at the boundary.

Resizing. If ``H * W > max_pixels`` the image is shrunk with ``INTER_AREA`` (the area-averaging
filter: no aliasing when shrinking) by the factor ``s = sqrt(max_pixels / (H * W))``, with
``H' = floor(H * s)``, ``W' = floor(W * s)`` (each >= 1), so ``H' * W' <= max_pixels`` and the
aspect ratio is kept to within one pixel. Images are never enlarged.

Failures raise :class:`ImageLoadError` whose message names the file and the reason (missing,
a directory, 0 bytes, truncated, not an image, unsupported pixel type).
"""
from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Optional, Tuple, Union

import cv2
import numpy as np

PathLike = Union[str, Path]

#: File extensions (lower case) treated as images by the dataset importers; others are ignored.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".pfm", ".jp2", ".ras", ".sr", ".exr", ".hdr", ".pic",
    ".gif", ".avif",
})

# Leading bytes of the formats we can name in an error message.
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"RIFF", "WEBP"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"P1", "PNM"), (b"P2", "PNM"), (b"P3", "PNM"), (b"P4", "PNM"), (b"P5", "PNM"), (b"P6", "PNM"),
)


class ImageLoadError(ValueError):
    """An image file could not be read; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot load image {self.path}: {reason}")

    def __reduce__(self):  # keep picklable across process pools
        return (type(self), (self.path, self.reason))


def is_image_file(path: PathLike) -> bool:
    """True for a non-hidden file whose extension is in :data:`IMAGE_EXTENSIONS`."""
    p = Path(path)
    return not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS


def sniff_format(data: bytes) -> Optional[str]:
    """The format named by the file's leading bytes, or None if not one we know."""
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            if name == "WEBP" and data[8:12] != b"WEBP":
                continue
            return name
    return None


def _read_bytes(path: Path) -> np.ndarray:
    if not path.exists():
        raise ImageLoadError(path, "file does not exist")
    if path.is_dir():
        raise ImageLoadError(path, "is a directory, not an image file")
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageLoadError(path, f"cannot read the file ({exc.strerror or exc})") from exc
    if buf.size == 0:
        raise ImageLoadError(path, "file is empty (0 bytes)")
    return buf


def _jpeg_truncated(data: bytes) -> bool:
    # In entropy-coded JPEG data 0xFF is always followed by 0x00 or a restart marker (D0-D7), so the
    # end-of-image marker FFD9 can only be the real end; a truncated file has none near its end.
    return data.rfind(b"\xff\xd9", max(0, len(data) - 4096)) < 0


_JPEG_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                 (2, cv2.IMREAD_REDUCED_COLOR_2))


def _jpeg_flags(data: bytes, max_pixels: Optional[int]) -> int:
    """IMREAD_COLOR, or a reduced decode (libjpeg's DCT-domain 1/2, 1/4, 1/8 scaling) when the
    reduced image still has at least 4 x ``max_pixels`` pixels, so INTER_AREA still shrinks it 2x."""
    if max_pixels:
        try:
            import io

            size = _jpeg_size(io.BytesIO(data))
        except (struct.error, ValueError):
            size = None
        if size:
            h, w = size
            for r, flag in _JPEG_REDUCED:
                if (h // r) * (w // r) >= 4 * max_pixels:
                    return flag
    return cv2.IMREAD_COLOR


def _decode(path: Path, buf: np.ndarray, max_pixels: Optional[int] = None) -> np.ndarray:
    head = buf[:16].tobytes()
    fmt = sniff_format(head)
    if fmt == "JPEG":
        data = buf.tobytes()
        if _jpeg_truncated(data):
            raise ImageLoadError(path, f"truncated JPEG data ({buf.size} bytes, no end-of-image marker)")
        flags = _jpeg_flags(data, max_pixels)
    else:
        flags = cv2.IMREAD_UNCHANGED
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error as exc:  # some codecs raise instead of returning None
        img = None
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
    else:
        detail = ""
    if img is None or img.size == 0:
        if fmt is None:
            raise ImageLoadError(path, f"not an image (unrecognised format, {buf.size} bytes)")
        extra = f": {detail}" if detail else ""
        raise ImageLoadError(path, f"corrupt or truncated {fmt} data ({buf.size} bytes), or a {fmt} "
                                   f"variant this OpenCV build cannot decode{extra}")
    return img


def _to_unit_float(path: Path, img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img.astype(np.float32) * np.float32(1.0 / 255.0)
    if img.dtype == np.uint16:
        return img.astype(np.float32) * np.float32(1.0 / 65535.0)
    if img.dtype in (np.float32, np.float64, np.float16):
        out = img.astype(np.float32)
        np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        return np.clip(out, 0.0, 1.0, out=out)
    if img.dtype == np.int8:
        return (img.astype(np.float32) + 128.0) * np.float32(1.0 / 255.0)
    if img.dtype == np.int16:
        return (img.astype(np.float32) + 32768.0) * np.float32(1.0 / 65535.0)
    raise ImageLoadError(path, f"unsupported pixel type {img.dtype}")


def _to_rgb(path: Path, img: np.ndarray) -> np.ndarray:
    """Decoded OpenCV array (any depth, 1-4 channels, BGR order) -> float32 RGB in [0, 1]."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        g = _to_unit_float(path, img)
        return np.repeat(g[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (2, 3, 4):
        raise ImageLoadError(path, f"unsupported image layout {img.shape}")
    f = _to_unit_float(path, img)
    c = f.shape[2]
    if c == 2:  # gray + alpha
        rgb = np.repeat(f[:, :, :1], 3, axis=2)
        alpha = f[:, :, 1:2]
    else:
        rgb = f[:, :, 2::-1]  # BGR(A) -> RGB
        alpha = f[:, :, 3:4] if c == 4 else None
    if alpha is not None:
        rgb = rgb * alpha + (np.float32(1.0) - alpha)
    return np.ascontiguousarray(rgb, dtype=np.float32)


def target_size(height: int, width: int, max_pixels: Optional[int]) -> Tuple[int, int]:
    """(H', W') after the aspect-preserving shrink to at most ``max_pixels`` (never enlarges)."""
    if not max_pixels or height * width <= max_pixels:
        return height, width
    s = math.sqrt(max_pixels / float(height * width))
    h = max(1, int(math.floor(height * s)))
    w = max(1, int(math.floor(width * s)))
    while h * w > max_pixels:  # guard against float rounding at the boundary
        if w >= h:
            w -= 1
        else:
            h -= 1
    return h, w


def _check_max_pixels(max_pixels) -> Optional[int]:
    if max_pixels is None or max_pixels == 0:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
    return int(max_pixels)


def load_image(path: PathLike, max_pixels: Optional[int] = 100_000) -> np.ndarray:
    """Read ``path`` as an (H, W, 3) float32 RGB array in [0, 1] with ``H * W <= max_pixels``.

    ``max_pixels=None`` (or 0) keeps the original size. Raises :class:`ImageLoadError` naming the
    file and the reason on any failure.
    """
    max_pixels = _check_max_pixels(max_pixels)
    path = Path(path)
    img = _decode(path, _read_bytes(path), max_pixels)
    h, w = img.shape[:2]
    th, tw = target_size(h, w, max_pixels)
    has_alpha = img.ndim == 3 and img.shape[2] in (2, 4)
    if (th, tw) != (h, w) and not has_alpha and img.dtype in (np.uint8, np.uint16):
        # Shrink in the integer type first (cheaper on large photos; rounding error <= 0.5 LSB).
        img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
        return _to_rgb(path, img)
    rgb = _to_rgb(path, img)  # composite alpha before averaging pixels
    if (th, tw) != (h, w):
        rgb = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA)
        rgb = np.clip(rgb, 0.0, 1.0, out=rgb)
    return np.ascontiguousarray(rgb, dtype=np.float32)


def _png_size(data: bytes) -> Optional[Tuple[int, int]]:
    if len(data) >= 24 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return h, w
    return None


def _jpeg_size(fh) -> Optional[Tuple[int, int]]:
    fh.seek(2)
    while True:
        b = fh.read(1)
        while b and b != b"\xff":
            b = fh.read(1)
        while b == b"\xff":
            b = fh.read(1)
        if not b:
            return None
        marker = b[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        seg = fh.read(2)
        if len(seg) < 2:
            return None
        length = struct.unpack(">H", seg)[0]
        # SOF0-SOF15 except DHT (C4), JPG (C8), DAC (CC) carry the frame size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            body = fh.read(5)
            if len(body) < 5:
                return None
            h, w = struct.unpack(">HH", body[1:5])
            return h, w
        fh.seek(length - 2, 1)


def image_size(path: PathLike) -> Tuple[int, int]:
    """(H, W) of the stored image (before any resize), read from the header for PNG/JPEG/BMP/GIF.

    Other formats are decoded in full. JPEG sizes ignore the EXIF orientation (H and W may be
    swapped relative to :func:`load_image`). Raises :class:`ImageLoadError` like :func:`load_image`.
    """
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(path, "file does not exist")
    if path.is_dir():
        raise ImageLoadError(path, "is a directory, not an image file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
            if not head:
                raise ImageLoadError(path, "file is empty (0 bytes)")
            fmt = sniff_format(head)
            size = None
            if fmt == "PNG":
                size = _png_size(head)
            elif fmt == "JPEG":
                size = _jpeg_size(fh)
            elif fmt == "BMP" and len(head) >= 26:
                w, h = struct.unpack("<ii", head[18:26])
                size = (abs(h), abs(w))
            elif fmt == "GIF" and len(head) >= 10:
                w, h = struct.unpack("<HH", head[6:10])
                size = (h, w)
    except OSError as exc:
        raise ImageLoadError(path, f"cannot read the file ({exc.strerror or exc})") from exc
    if size is not None and size[0] > 0 and size[1] > 0:
        return int(size[0]), int(size[1])
    img = _decode(path, _read_bytes(path))
    return int(img.shape[0]), int(img.shape[1])

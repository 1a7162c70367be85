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

Reading. Only regular files are read: the path is opened with ``O_NONBLOCK`` and checked with
``fstat`` before any read, so a FIFO, socket or device named ``.jpg`` is refused at once instead of
blocking the run; a dangling symbolic link, a link loop and a file without read permission are
named as such.

Truncation. A JPEG is accepted if its marker structure reaches the end-of-image marker (segments are
walked by their lengths and the entropy-coded data scanned for the next marker, so an EXIF thumbnail's
EOI is not mistaken for the image's), or -- for files the walk cannot follow -- if an EOI marker
sits in the last 4 KB. Bytes after the EOI (a motion photo's video, a vendor trailer) are ignored, as
libjpeg does. A JPEG without its EOI is refused as truncated: libjpeg would fill the missing part
with grey and only warn.

Memory. The pixel size is read from the header first (PNG, JPEG, BMP, GIF, WebP). An image whose
decode would need more than :data:`MAX_DECODE_BYTES` (estimated from the header: pixels x channels x
bytes per sample, at the reduced JPEG size when that applies, plus the conversion) is refused with an
error naming the file, its size and the memory it would take; only JPEG can be decoded at reduced size
(for PNG and the other codecs OpenCV's ``IMREAD_REDUCED_*`` decodes in full and resizes after, and
drops alpha and 16-bit depth, so it saves nothing). An image with alpha that is shrunk is composited
on white in its integer type in strips of rows (rounding <= 0.5 LSB, as the opaque path), so a
12000x9000 RGBA PNG peaks at ~0.8 GB instead of ~5 GB of float32 copies. Running out of memory anyway
(``MemoryError``, or OpenCV failing to allocate) is an :class:`ImageLoadError` naming the file and
its size, not an unrelated error later.

Failures raise :class:`ImageLoadError` whose message names the file and the reason (missing,
a directory, not a regular file, no permission, 0 bytes, truncated, not an image, too large,
unsupported pixel type).
"""
from __future__ import annotations

import errno
import hashlib
import math
import os
import stat
import struct
from pathlib import Path
from typing import Optional, Tuple, Union

import cv2
import numpy as np

PathLike = Union[str, Path]

#: Largest estimated memory (bytes) :func:`load_image` spends decoding one image; larger images are
#: refused with an error naming the file and its size (JPEGs count at their reduced decode size).
MAX_DECODE_BYTES = 3 * 1024 ** 3

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


def _stat_reason(path: Path, exc: OSError) -> str:
    """Why ``os.stat(path)`` failed, in words (dangling link, link loop, permission, missing)."""
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (the link points, directly or not, to itself)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to access the file ({exc.strerror})"
    if exc.errno == errno.ENOENT:
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return f"dangling symbolic link (its target {os.readlink(path)} does not exist)"
        except OSError:
            pass
        return "file does not exist"
    if exc.errno == errno.ENOTDIR:
        return "file does not exist (a part of its path is not a folder)"
    return f"cannot access the file ({exc.strerror or exc})"


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "is a directory, not an image file"
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return f"not a regular file but {name}; only regular files are read"
    return "not a regular file; only regular files are read"


def _check_regular(path: Path) -> os.stat_result:
    """stat ``path`` (following links) and require a regular file; ImageLoadError otherwise."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ImageLoadError(path, _stat_reason(path, exc)) from None
    except ValueError as exc:  # embedded NUL character
        raise ImageLoadError(path, f"invalid file name ({exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageLoadError(path, _kind_of(st.st_mode))
    return st


def _open_regular(path: Path) -> int:
    """An fd of ``path`` opened for reading, checked to be a regular file. O_NONBLOCK: opening a
    FIFO does not wait for a writer (on a regular file the flag does nothing)."""
    _check_regular(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ImageLoadError(path, f"no permission to read the file ({exc.strerror})") from None
        if exc.errno in (errno.ENXIO, errno.EWOULDBLOCK):
            raise ImageLoadError(path, "not a regular file; only regular files are read") from None
        raise ImageLoadError(path, _stat_reason(path, exc)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # replaced between the stat and the open
            raise ImageLoadError(path, _kind_of(mode))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_bytes(path: Path) -> np.ndarray:
    fd = _open_regular(path)
    try:
        with os.fdopen(fd, "rb") as fh:
            data = fh.read()
    except MemoryError:
        raise ImageLoadError(path, "not enough memory to read the file") from None
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ImageLoadError(path, f"no permission to read the file ({exc.strerror})") from None
        raise ImageLoadError(path, f"cannot read the file ({exc.strerror or exc})") from exc
    if not data:
        raise ImageLoadError(path, "file is empty (0 bytes)")
    return np.frombuffer(data, dtype=np.uint8)


def _jpeg_end(data: bytes) -> Optional[int]:
    """Offset just past the end-of-image marker of the JPEG in ``data``, or None if the marker
    structure ends (truncation) before it. Segments are skipped by their lengths; after each SOS the
    entropy-coded data is scanned for the next marker (0xFF followed by a byte that is not 0x00
    stuffing, a restart marker RST0-7 or another 0xFF fill byte)."""
    n = len(data)
    pos = 2  # after SOI
    while pos < n:
        if data[pos] != 0xFF:
            return None  # not at a marker: the walk lost track (caller falls back)
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            return None
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            return pos
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            continue  # stand-alone markers
        if marker == 0x00 or pos + 2 > n:
            return None
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2 or pos + length > n:
            return None
        pos += length
        if marker == 0xDA:  # start of scan: skip the entropy-coded data
            while True:
                j = data.find(b"\xff", pos)
                if j < 0 or j + 1 >= n:
                    return None
                nxt = data[j + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                    pos = j + 2
                elif nxt == 0xFF:
                    pos = j + 1
                else:
                    pos = j
                    break
    return None


def _jpeg_truncated(data: bytes) -> bool:
    """True if the JPEG has no end-of-image marker: neither the marker walk (:func:`_jpeg_end`)
    reaches one, nor is there one in the last 4 KB (files the walk cannot follow)."""
    if _jpeg_end(data) is not None:
        return False
    return data.rfind(b"\xff\xd9", max(0, len(data) - 4096)) < 0


_JPEG_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                 (2, cv2.IMREAD_REDUCED_COLOR_2))


def _jpeg_reduction(size: Optional[Tuple[int, int]], max_pixels: Optional[int]) -> Tuple[int, int]:
    """(IMREAD flag, factor): IMREAD_COLOR (1), or a reduced decode (libjpeg's DCT-domain 1/2, 1/4,
    1/8 scaling) when the reduced image still has at least 4 x ``max_pixels`` pixels, so INTER_AREA
    still shrinks it 2x."""
    if max_pixels and size:
        h, w = size
        for r, flag in _JPEG_REDUCED:
            if (h // r) * (w // r) >= 4 * max_pixels:
                return flag, r
    return cv2.IMREAD_COLOR, 1


def _header_info(data: bytes) -> Optional[Tuple[str, int, int, int, int]]:
    """(format, H, W, channels, bytes per sample) from the header of a PNG, JPEG, BMP, GIF or WebP
    (channels as OpenCV decodes them with IMREAD_UNCHANGED, an upper bound), or None."""
    import io

    fmt = sniff_format(data[:16])
    try:
        if fmt == "PNG" and len(data) >= 26 and data[12:16] == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", data[16:26])
            ch = {0: 1, 2: 3, 3: 4, 4: 4, 6: 4}.get(ctype, 4)
            return fmt, h, w, ch, 2 if depth == 16 else 1
        if fmt == "JPEG":
            size = _jpeg_size(io.BytesIO(data))
            return (fmt, size[0], size[1], 3, 1) if size else None
        if fmt == "BMP" and len(data) >= 30:
            w, h = struct.unpack("<ii", data[18:26])
            bpp = struct.unpack("<H", data[28:30])[0]
            return fmt, abs(h), abs(w), 4 if bpp == 32 else 3, 1
        if fmt == "GIF" and len(data) >= 10:
            w, h = struct.unpack("<HH", data[6:10])
            return fmt, h, w, 4, 1
        if fmt == "WEBP" and len(data) >= 30:
            chunk = data[12:16]
            if chunk == b"VP8X":
                w = 1 + int.from_bytes(data[24:27], "little")
                h = 1 + int.from_bytes(data[27:30], "little")
                return fmt, h, w, 4, 1
            if chunk == b"VP8L" and data[20] == 0x2F:
                b = int.from_bytes(data[21:25], "little")
                return fmt, ((b >> 14) & 0x3FFF) + 1, (b & 0x3FFF) + 1, 4, 1
            if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
                w, h = struct.unpack("<HH", data[26:30])
                return fmt, h & 0x3FFF, w & 0x3FFF, 3, 1
    except (struct.error, ValueError, IndexError):
        return None
    return None


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def decode_memory(height: int, width: int, channels: int = 3, itemsize: int = 1,
                  max_pixels: Optional[int] = 100_000) -> int:
    """Estimated peak bytes :func:`load_image` needs for an image decoded at ``height x width``
    with ``channels`` samples of ``itemsize`` bytes: the decoded array, plus the composited copy
    (alpha images) when shrinking, or the float32 conversion (~3 copies) when kept at full size."""
    decoded = height * width * channels * itemsize
    th, tw = target_size(height, width, max_pixels)
    if (th, tw) != (height, width) and itemsize in (1, 2):
        work = height * width * 3 * itemsize if channels in (2, 4) else 0
    else:
        work = height * width * (channels + 6) * 4
    return int(decoded + work + th * tw * 3 * 4 * 2)


def _check_memory(path: Path, data: bytes, max_pixels: Optional[int]) -> Tuple[Optional[Tuple[int, int]], int, int]:
    """Header size -> (size, IMREAD flag for JPEG, reduction); ImageLoadError if decoding would
    take more than :data:`MAX_DECODE_BYTES`."""
    info = _header_info(data)
    if info is None:
        return None, cv2.IMREAD_COLOR, 1
    fmt, h, w, ch, item = info
    if h <= 0 or w <= 0:
        raise ImageLoadError(path, f"the {fmt} header gives an invalid size {w}x{h}")
    flag, r = (_jpeg_reduction((h, w), max_pixels) if fmt == "JPEG" else (cv2.IMREAD_UNCHANGED, 1))
    need = decode_memory(-(-h // r), -(-w // r), ch, item, max_pixels)
    if need > MAX_DECODE_BYTES:
        at = f" (at 1/{r} size)" if r > 1 else ""
        raise ImageLoadError(path, f"image too large: the {fmt} is {w}x{h} pixels ({w * h / 1e6:.0f} Mpixels, "
                                   f"{ch} x {8 * item}-bit channels); decoding it{at} would need ~{_gb(need)}, "
                                   f"more than the {_gb(MAX_DECODE_BYTES)} limit "
                                   f"(fvstudio.data.images.MAX_DECODE_BYTES); shrink the file first")
    return (h, w), flag, r


def _out_of_memory(path: Path, size: Optional[Tuple[int, int]], exc: BaseException) -> ImageLoadError:
    import re

    what = f"the {size[1]}x{size[0]}-pixel image" if size else "the image"
    text = str(exc).strip()
    m = re.search(r"Failed to allocate \d+ bytes", text)
    detail = m.group(0) if m else (text.splitlines()[-1] if text else type(exc).__name__)
    return ImageLoadError(path, f"not enough memory to decode {what} ({detail})")


def _decode(path: Path, buf: np.ndarray, max_pixels: Optional[int] = None) -> np.ndarray:
    fmt = sniff_format(buf[:16].tobytes())
    # JPEG: the frame header may sit behind large EXIF/ICC segments, so the whole file is walked
    data = buf.tobytes() if fmt == "JPEG" else buf[:4096].tobytes()
    size, flags, _ = _check_memory(path, data, max_pixels)
    if fmt == "JPEG":
        if _jpeg_truncated(data):
            raise ImageLoadError(path, f"truncated JPEG data ({buf.size} bytes, no end-of-image marker)")
    else:
        flags = cv2.IMREAD_UNCHANGED
    try:
        img = cv2.imdecode(buf, flags)
    except MemoryError as exc:
        raise _out_of_memory(path, size, exc) from None
    except cv2.error as exc:  # some codecs raise instead of returning None
        if "alloc" in str(exc).lower() or "memory" in str(exc).lower():
            raise _out_of_memory(path, size, exc) from None
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
    return load_image_sha1(path, max_pixels)[0]


def load_image_sha1(path: PathLike, max_pixels: Optional[int] = 100_000) -> Tuple[np.ndarray, str]:
    """:func:`load_image` and the SHA-1 of the bytes it decoded (the file read once): what identifies
    the image's content for caches that store no pixels nor descriptors of it."""
    max_pixels = _check_max_pixels(max_pixels)
    path = Path(path)
    buf = _read_bytes(path)
    sha1 = hashlib.sha1(buf.data).hexdigest()
    return _load_decoded(path, buf, max_pixels), sha1


def _load_decoded(path: Path, buf: np.ndarray, max_pixels: Optional[int]) -> np.ndarray:
    img = _decode(path, buf, max_pixels)
    try:
        return _convert(path, img, max_pixels)
    except MemoryError as exc:
        raise _out_of_memory(path, img.shape[:2], exc) from None
    except cv2.error as exc:
        if "alloc" in str(exc).lower() or "memory" in str(exc).lower():
            raise _out_of_memory(path, img.shape[:2], exc) from None
        raise


def _composite_int(img: np.ndarray) -> np.ndarray:
    """(H, W, 2|4) uint8/uint16 BGR(A) or gray+alpha -> (H, W, 3) BGR of the same type, composited
    on white (``a * c + (1 - a) * max``, rounded), in strips of rows so the float work stays small."""
    top = np.float32(255.0 if img.dtype == np.uint8 else 65535.0)
    h, w, c = img.shape
    out = np.empty((h, w, 3), img.dtype)
    rows = max(1, (4 << 20) // max(1, w * c * 4))
    for r0 in range(0, h, rows):
        s = img[r0:r0 + rows].astype(np.float32)
        a = s[..., c - 1:c] * (np.float32(1.0) / top)
        col = s[..., :3] if c == 4 else s[..., :1]
        res = col * a + top * (np.float32(1.0) - a)
        np.rint(res, out=res)
        out[r0:r0 + rows] = res  # broadcasts the gray channel to 3
    return out


def _convert(path: Path, img: np.ndarray, max_pixels: Optional[int]) -> np.ndarray:
    h, w = img.shape[:2]
    th, tw = target_size(h, w, max_pixels)
    has_alpha = img.ndim == 3 and img.shape[2] in (2, 4)
    if (th, tw) != (h, w) and img.dtype in (np.uint8, np.uint16):
        # Shrink in the integer type first (cheaper on large photos; rounding error <= 0.5 LSB);
        # alpha is composited on white first, also in the integer type, in strips (memory).
        if has_alpha:
            img = _composite_int(img)
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
    fd = _open_regular(path)
    try:
        with os.fdopen(fd, "rb") as fh:
            head = fh.read(4096)
            if not head:
                raise ImageLoadError(path, "file is empty (0 bytes)")
            fmt = sniff_format(head)
            size = None
            if fmt == "JPEG":
                size = _jpeg_size(fh)
            elif fmt is not None:
                info = _header_info(head)
                size = info[1:3] if info else None
    except OSError as exc:
        raise ImageLoadError(path, f"cannot read the file ({exc.strerror or exc})") from exc
    except struct.error:
        size = None
    if size is not None and size[0] > 0 and size[1] > 0:
        return int(size[0]), int(size[1])
    img = _decode(path, _read_bytes(path))
    return int(img.shape[0]), int(img.shape[1])

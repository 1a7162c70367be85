"""Synthetic texture images: the sample data that ships with fvstudio (numpy + OpenCV only).

``python -m fvstudio.data.synthetic --out sample_data`` writes, deterministically from ``--seed``:

- ``textures/<class>/<class>_NNN.jpg``: a class-folder dataset of :data:`CLASSES` (8 classes x 40
  JPEG images, 200-320 px wide, aspect 0.62-0.85);
- ``voc_mini/VOC2007/{JPEGImages,ImageSets/Main,Annotations}``: a PASCAL-VOC-layout mini devkit with
  :data:`VOC_CLASSES` textured "objects" pasted on a cluttered background (multi-label images,
  small objects flagged difficult, trainval/test splits).

Every image draws a texture in rotated, scaled coordinates ``u = (x cos t + y sin t) / period``,
``v = (-x sin t + y cos t) / period`` (period 9-32 px, log-uniform; t uniform), maps it through two
colours, then applies an illumination ramp and gain, optional blur, Gaussian noise, and in 30 % of
the images an occluding rectangle (15-35 % of the area) of another class's texture.

The classes are built to overlap so that a good pipeline is well above chance but not perfect:

- ``stripes`` / ``waves``: the same sine grating whose phase is modulated along the stripes with
  amplitude 0-0.3 (stripes) or 0.2-0.9 periods (waves); the ranges overlap.
- ``dots`` / ``spots``: disks on a lattice jittered by 0-0.35 cells of one radius (dots) versus
  disks of varying radius (x0.5-1.5) at random positions (spots).
- ``checkers`` / ``bricks``: a checkerboard versus a running-bond brick wall with mortar lines.
- ``moss`` / ``rust``: the same band-pass noise texture; they differ **only in colour** (hue about
  100 deg versus 25 deg, each +-30 deg, so yellowish images are ambiguous). Gradients (SIFT) cannot
  tell them apart; local colour statistics (LCS) can. All other classes take random colours.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np

DEFAULT_SEED = 2013
CLASSES = ("bricks", "checkers", "dots", "moss", "rust", "spots", "stripes", "waves")
VOC_CLASSES = ("bricks", "checkers", "dots", "stripes")
JPEG_QUALITY = 80


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _coords(h: int, w: int, rng: np.random.Generator, period_range=(9.0, 32.0)):
    period = math.exp(rng.uniform(math.log(period_range[0]), math.log(period_range[1])))
    t = rng.uniform(0, math.pi)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x -= rng.uniform(0, w)
    y -= rng.uniform(0, h)
    c, s = math.cos(t), math.sin(t)
    u = (x * c + y * s) / period
    v = (-x * s + y * c) / period
    return u, v, period


def _hash_table(rng: np.random.Generator, size: int = 4096) -> np.ndarray:
    return rng.random((size, 3)).astype(np.float32)


def _cell_lookup(table: np.ndarray, iu: np.ndarray, iv: np.ndarray) -> np.ndarray:
    idx = ((iu.astype(np.int64) * 73856093) ^ (iv.astype(np.int64) * 19349663)) % table.shape[0]
    return table[idx]


def _grating(h, w, rng, amp_range):
    u, v, _ = _coords(h, w, rng)
    amp = rng.uniform(*amp_range)
    f2 = rng.uniform(0.12, 0.35)
    sharp = rng.uniform(1.0, 6.0)
    phase = amp * np.sin(2 * np.pi * f2 * v + rng.uniform(0, 2 * np.pi))
    return _sigmoid(sharp * np.sin(2 * np.pi * (u + phase)))


def _stripes(h, w, rng):
    return _grating(h, w, rng, (0.0, 0.3))


def _waves(h, w, rng):
    return _grating(h, w, rng, (0.2, 0.9))


def _checkers(h, w, rng):
    u, v, _ = _coords(h, w, rng)
    sharp = rng.uniform(2.0, 10.0)
    return _sigmoid(sharp * np.sin(np.pi * u) * np.sin(np.pi * v))


def _bricks(h, w, rng):
    u, v, period = _coords(h, w, rng, (7.0, 22.0))
    aspect = rng.uniform(1.6, 2.6)
    row = np.floor(v)
    ub = u / aspect + 0.5 * np.mod(row, 2)
    mortar = rng.uniform(0.08, 0.18)
    fv = v - row
    fu = ub - np.floor(ub)
    d = np.minimum(np.minimum(fv, 1 - fv), np.minimum(fu, 1 - fu) * aspect)  # distance to a joint
    p = _sigmoid((d - mortar * 0.5) * period * 1.5)
    shade = _cell_lookup(_hash_table(rng), np.floor(ub) + 1000, row + 1000)[..., 0]
    return p * (0.75 + 0.25 * shade)


def _dots(h, w, rng):
    u, v, period = _coords(h, w, rng, (10.0, 30.0))
    table = _hash_table(rng)
    iu, iv = np.floor(u), np.floor(v)
    jitter = rng.uniform(0.0, 0.35)
    j = _cell_lookup(table, iu + 1000, iv + 1000)
    du = u - iu - 0.5 - jitter * (j[..., 0] - 0.5)
    dv = v - iv - 0.5 - jitter * (j[..., 1] - 0.5)
    r = rng.uniform(0.18, 0.32)
    dist = np.sqrt(du * du + dv * dv)
    return _sigmoid((r - dist) * period * rng.uniform(0.6, 1.5))


def _spots(h, w, rng):
    period = math.exp(rng.uniform(math.log(10.0), math.log(30.0)))
    n = int(h * w / (period * period) * rng.uniform(0.5, 0.9))
    canvas = np.zeros((h, w), np.float32)
    r0 = period * rng.uniform(0.18, 0.32)
    for _ in range(n):
        cx, cy = rng.uniform(-r0, w + r0), rng.uniform(-r0, h + r0)
        r = r0 * rng.uniform(0.5, 1.5)
        cv2.circle(canvas, (int(round(cx * 4)), int(round(cy * 4))), int(round(r * 4)), 1.0, -1,
                   lineType=cv2.LINE_AA, shift=2)
    return cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.5, 1.2))


def _bandpass_noise(h, w, rng):
    scale = rng.uniform(2.0, 6.0)
    noise = rng.standard_normal((h, w)).astype(np.float32)
    a = cv2.GaussianBlur(noise, (0, 0), scale)
    b = cv2.GaussianBlur(noise, (0, 0), scale * 3.0)
    x = a - 0.7 * b
    x /= x.std() + 1e-6
    return _sigmoid(x * rng.uniform(1.0, 3.0))


def _clutter(h, w, rng):
    noise = rng.standard_normal((h, w)).astype(np.float32)
    x = cv2.GaussianBlur(noise, (0, 0), rng.uniform(6.0, 14.0))
    x /= x.std() + 1e-6
    return _sigmoid(x * 0.8)


PATTERNS: Dict[str, Callable] = {
    "bricks": _bricks, "checkers": _checkers, "dots": _dots, "moss": _bandpass_noise,
    "rust": _bandpass_noise, "spots": _spots, "stripes": _stripes, "waves": _waves,
}
HUES = {"moss": 100.0, "rust": 25.0}  # degrees; the two colour-only classes


def _hsv_to_rgb(hue_deg: float, s: float, v: float) -> np.ndarray:
    px = np.array([[[hue_deg / 2.0 % 180.0, s * 255.0, v * 255.0]]], np.float32).astype(np.uint8)
    return cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def _palette(cls: str, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    if cls in HUES:
        hue = HUES[cls] + rng.uniform(-30.0, 30.0)
        dark = _hsv_to_rgb(hue + rng.uniform(-10, 10), rng.uniform(0.5, 0.9), rng.uniform(0.15, 0.4))
        light = _hsv_to_rgb(hue + rng.uniform(-10, 10), rng.uniform(0.4, 0.8), rng.uniform(0.6, 0.95))
    else:
        hue = rng.uniform(0.0, 360.0)
        dark = _hsv_to_rgb(hue, rng.uniform(0.1, 0.8), rng.uniform(0.08, 0.45))
        light = _hsv_to_rgb(hue + rng.uniform(-60, 60), rng.uniform(0.1, 0.8), rng.uniform(0.55, 0.95))
    if rng.random() < 0.5:
        dark, light = light, dark
    return dark, light


def render_texture(cls: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """One (h, w, 3) float32 RGB texture of class ``cls`` in [0, 1] (before illumination/noise)."""
    p = PATTERNS[cls](h, w, rng).astype(np.float32)
    c0, c1 = _palette(cls, rng)
    return c0[None, None, :] + p[:, :, None] * (c1 - c0)[None, None, :]


def _photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    phi = rng.uniform(0, 2 * np.pi)
    ramp = ((x - w / 2) * math.cos(phi) + (y - h / 2) * math.sin(phi)) / math.hypot(h, w)
    light = rng.uniform(0.65, 1.2) * (1.0 + rng.uniform(0.0, 0.8) * ramp)
    img = img * light[:, :, None]
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.3))
    img = img + rng.standard_normal(img.shape).astype(np.float32) * rng.uniform(0.005, 0.04)
    return np.clip(img, 0.0, 1.0)


def _random_size(rng) -> Tuple[int, int]:
    w = int(rng.integers(200, 321))
    h = int(round(w * rng.uniform(0.62, 0.85)))
    return h, w


def make_texture_image(cls: str, rng: np.random.Generator, occlude_p: float = 0.3) -> np.ndarray:
    """One sample image of class ``cls``: texture + optional occluder + illumination/noise."""
    h, w = _random_size(rng)
    img = render_texture(cls, h, w, rng)
    if rng.random() < occlude_p:
        other = rng.choice([c for c in CLASSES if c != cls])
        frac = rng.uniform(0.15, 0.35)
        oh = int(h * math.sqrt(frac) * rng.uniform(0.8, 1.25))
        ow = int(frac * h * w / max(oh, 1))
        oh, ow = min(oh, h), min(ow, w)
        y0, x0 = int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))
        img[y0:y0 + oh, x0:x0 + ow] = render_texture(str(other), oh, ow, rng)
    return _photometric(img, rng)


def _write_jpeg(path: Path, rgb: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    bgr = cv2.cvtColor((np.clip(rgb, 0, 1) * 255.0 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    buf.tofile(str(path))


def generate_textures(out: Path, seed: int = DEFAULT_SEED, per_class: int = 40,
                      classes: Sequence[str] = CLASSES) -> List[Path]:
    """Write the class-folder dataset under ``out``; image (c, i) uses ``default_rng([seed, c, i])``."""
    paths = []
    for ci, cls in enumerate(classes):
        for i in range(per_class):
            rng = np.random.default_rng([seed, ci, i])
            path = Path(out) / cls / f"{cls}_{i:03d}.jpg"
            _write_jpeg(path, make_texture_image(cls, rng))
            paths.append(path)
    return paths


def _voc_image(rng: np.random.Generator):
    """A cluttered background with 1-3 textured objects; returns image and [(cls, box, difficult)]."""
    h, w = _random_size(rng)
    bg = _clutter(h, w, rng)
    c0, c1 = _palette("stripes", rng)
    img = c0[None, None, :] + bg[:, :, None] * (c1 - c0)[None, None, :] * 0.5
    objects = []
    n_obj = int(rng.choice([1, 1, 2, 2, 3]))
    for _ in range(n_obj):
        cls = str(rng.choice(VOC_CLASSES))
        small = rng.random() < 0.18
        frac = rng.uniform(0.015, 0.035) if small else rng.uniform(0.08, 0.3)
        ar = rng.uniform(0.6, 1.6)
        oh = max(6, min(h, int(math.sqrt(frac * h * w * ar))))
        ow = max(6, min(w, int(frac * h * w / oh)))
        y0, x0 = int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))
        mask = np.zeros((h, w), np.float32)
        if rng.random() < 0.5:
            cv2.ellipse(mask, (x0 + ow // 2, y0 + oh // 2), (ow // 2, oh // 2), 0, 0, 360, 1.0, -1,
                        lineType=cv2.LINE_AA)
        else:
            mask[y0:y0 + oh, x0:x0 + ow] = 1.0
        tex = render_texture(cls, h, w, rng)
        img = img * (1 - mask[:, :, None]) + tex * mask[:, :, None]
        objects.append((cls, (x0 + 1, y0 + 1, x0 + ow, y0 + oh), bool(small)))
    return _photometric(img, rng), objects


def _voc_xml(image_id: str, shape, objects) -> str:
    h, w = shape[:2]
    parts = [f"<annotation>\n\t<folder>VOC2007</folder>\n\t<filename>{image_id}.jpg</filename>\n"
             f"\t<source><database>fvstudio synthetic</database></source>\n"
             f"\t<size><width>{w}</width><height>{h}</height><depth>3</depth></size>\n"
             f"\t<segmented>0</segmented>\n"]
    for cls, (x0, y0, x1, y1), difficult in objects:
        parts.append(f"\t<object>\n\t\t<name>{cls}</name>\n\t\t<pose>Unspecified</pose>\n"
                     f"\t\t<truncated>0</truncated>\n\t\t<difficult>{int(difficult)}</difficult>\n"
                     f"\t\t<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
                     f"<ymax>{y1}</ymax></bndbox>\n\t</object>\n")
    parts.append("</annotation>\n")
    return "".join(parts)


def generate_voc_mini(out: Path, seed: int = DEFAULT_SEED, n_images: int = 48) -> Path:
    """Write ``out/VOC2007/...``: images 000001..N, first half trainval (halved into train/val),
    second half test; per-class flags 1 / -1 / 0 (only difficult objects of that class)."""
    root = Path(out) / "VOC2007"
    ids = [f"{i + 1:06d}" for i in range(n_images)]
    flags: Dict[str, Dict[str, int]] = {c: {} for c in VOC_CLASSES}
    for k, image_id in enumerate(ids):
        rng = np.random.default_rng([seed, 1000, k])
        img, objects = _voc_image(rng)
        _write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", img)
        ann = root / "Annotations" / f"{image_id}.xml"
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text(_voc_xml(image_id, img.shape, objects), encoding="utf-8")
        for c in VOC_CLASSES:
            present = [d for (oc, _, d) in objects if oc == c]
            flags[c][image_id] = -1 if not present else (1 if not all(present) else 0)
    n_tv = n_images // 2
    splits = {"trainval": ids[:n_tv], "train": ids[:n_tv // 2], "val": ids[n_tv // 2:n_tv],
              "test": ids[n_tv:]}
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    for split, members in splits.items():
        (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in members))
        for c in VOC_CLASSES:
            # VOC's own layout: id, then the flag right-aligned in a 2-character field.
            (main / f"{c}_{split}.txt").write_text("".join(f"{i} {flags[c][i]:2d}\n" for i in members))
    return root


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fvstudio.data.synthetic", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("sample_data"), help="output folder")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--per-class", type=int, default=40, help="images per texture class")
    ap.add_argument("--voc-images", type=int, default=48, help="images in the VOC mini devkit")
    args = ap.parse_args(argv)
    paths = generate_textures(args.out / "textures", args.seed, args.per_class)
    voc = generate_voc_mini(args.out / "voc_mini", args.seed, args.voc_images)
    size = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    print(f"wrote {len(paths)} texture images ({len(CLASSES)} classes) and a VOC mini devkit at {voc}; "
          f"{size / 1e6:.2f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

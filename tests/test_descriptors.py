"""Dense SIFT and Local Color Statistics: VLFeat golden, grid, invariances, degenerate and bad input."""
import cv2
import numpy as np
import pytest

from fvstudio.engine.descriptors import (CHANNELS, DenseDescriptors, dense_sift, extract_channel,
                                         local_color_statistics, to_gray)


def _smooth_noise(shape, seed=0, sigma=2.0):
    rng = np.random.default_rng(seed)
    img = rng.random(shape, dtype=np.float32)
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    img -= img.min()
    return (img / img.max()).astype(np.float32)


def _cosine(a, b):
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _bins(desc):
    """SIFT-order descriptors (T, 128) -> h[T, bx, by, t] (t counted from +x towards +y)."""
    T = desc.shape[0]
    h = np.empty((T, 4, 4, 8), desc.dtype)
    for bx in range(4):
        for by in range(4):
            for t in range(8):
                h[:, bx, by, t] = desc[:, 8 * (by + 4 * bx) + (2 - t) % 8]
    return h


# ---------------------------------------------------------------------------------------------
# golden: VLFeat 0.9.21 vl_dsift (step 4, bin 6, no smoothing)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("window", ["gauss", "flat"])
def test_matches_vlfeat_dsift(vlfeat_golden, window):
    img = vlfeat_golden["dsift_image"]
    res = dense_sift(img, patch=24, step=4, scales=1, presmooth=False, window=window,
                     contrast_threshold=0.0)  # vl_dsift zeroes nothing (PHOW's threshold is on top of it)
    ref = vlfeat_golden[f"dsift_{window}_descr_sift_order"]
    frames = vlfeat_golden[f"dsift_{window}_frames_xy"]
    assert res.descriptors.shape == ref.shape
    np.testing.assert_array_equal(res.positions, frames.astype(np.float32))
    cos = _cosine(res.descriptors, ref)
    assert cos.mean() >= 0.99
    assert cos.min() >= 0.99
    # the contrast measure is VLFeat's keypoint norm (histogram mass / frame area)
    np.testing.assert_allclose(res.norms, vlfeat_golden[f"dsift_{window}_frames_norm"], rtol=1e-3)
    np.testing.assert_allclose(res.scales, 24.0)
    assert res.image_shape == img.shape


def test_golden_c_order_is_the_documented_permutation(vlfeat_golden):
    # guards our reading of the README: sift order = transpose of the C order
    c = vlfeat_golden["dsift_gauss_descr_c_order"]
    s = vlfeat_golden["dsift_gauss_descr_sift_order"]
    for bx, by, t in [(0, 0, 0), (1, 2, 3), (3, 1, 7), (2, 3, 5)]:
        np.testing.assert_array_equal(s[:, 8 * (by + 4 * bx) + (2 - t) % 8], c[:, 8 * (bx + 4 * by) + t])


# ---------------------------------------------------------------------------------------------
# shapes and grid
# ---------------------------------------------------------------------------------------------

def test_shapes_multiscale_and_descriptor_count():
    img = _smooth_noise((316, 316), seed=1)  # ~100K pixels
    res = dense_sift(img)
    T = len(res)
    assert isinstance(res, DenseDescriptors)
    assert 9_000 <= T <= 12_000  # the paper's "~10K descriptors per image"
    assert res.descriptors.shape == (T, 128) and res.descriptors.dtype == np.float32
    assert res.positions.shape == (T, 2) and res.positions.dtype == np.float32
    assert res.scales.shape == (T,) and res.norms.shape == (T,)
    assert res.image_shape == (316, 316)
    assert np.isfinite(res.descriptors).all()
    np.testing.assert_allclose(np.linalg.norm(res.descriptors, axis=1), 1.0, atol=1e-4)
    sizes = np.unique(res.scales)
    assert len(sizes) == 5
    np.testing.assert_allclose(sizes / 24.0, 2 ** (0.5 * np.arange(5)), rtol=0.02)
    # positions inside the image, patch centres of the coarse levels spread over it
    assert res.positions.min() >= 0 and res.positions.max() <= 315
    coarse = res.positions[res.scales == sizes[-1]]
    assert coarse[:, 0].min() < 40 and coarse[:, 0].max() > 275


def test_level_zero_grid_and_count_formula():
    img = _smooth_noise((50, 71), seed=2)
    res = dense_sift(img, scales=1)
    nx, ny = (71 - 1 - 18) // 4 + 1, (50 - 1 - 18) // 4 + 1
    assert len(res) == nx * ny
    np.testing.assert_array_equal(res.positions[:nx, 0], 9 + 4 * np.arange(nx))
    np.testing.assert_array_equal(res.positions[::nx, 1], 9 + 4 * np.arange(ny))


def test_coarser_level_positions_map_back_to_input_pixels():
    # a bright dot: at every level, the strongest descriptor sits on it in input coordinates
    img = np.zeros((200, 200), np.float32)
    cv2.circle(img, (120, 80), 6, 1.0, -1)
    res = dense_sift(img, scales=4, step=2)
    for size in np.unique(res.scales):
        sel = res.scales == size
        best = res.positions[sel][np.argmax(res.norms[sel])]
        assert np.hypot(best[0] - 120, best[1] - 80) <= 0.1 * size + 2


def test_root_sift():
    img = _smooth_noise((64, 64), seed=3)
    plain = dense_sift(img, scales=2)
    root = dense_sift(img, scales=2, root=True)
    assert (root.descriptors >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(root.descriptors, axis=1), 1.0, atol=1e-4)
    l1 = plain.descriptors / plain.descriptors.sum(1, keepdims=True)
    np.testing.assert_allclose(root.descriptors, np.sqrt(l1), atol=1e-5)
    np.testing.assert_array_equal(root.norms, plain.norms)


def test_contrast_threshold_zeroes_exactly_the_low_contrast_frames():
    img = _smooth_noise((80, 96), seed=4)
    img[:, :48] = 0.5 + 0.002 * (img[:, :48] - 0.5)  # a near-uniform left half: noise-level gradients
    plain = dense_sift(img, scales=2, contrast_threshold=0.0)
    thr = float(np.median(plain.norms))
    cut = dense_sift(img, scales=2, contrast_threshold=thr)
    low = plain.norms < np.float32(thr)
    assert 0 < low.sum() < len(plain)
    assert not cut.descriptors[low].any()
    np.testing.assert_array_equal(cut.descriptors[~low], plain.descriptors[~low])
    for name in ("positions", "scales", "norms"):
        np.testing.assert_array_equal(getattr(cut, name), getattr(plain, name))
    # low contrast is where the image is flat; 0 is off, and the default is VLFeat PHOW's 0.005
    assert plain.positions[low, 0].mean() < plain.positions[~low, 0].mean()
    assert (plain.norms < 0.005).any() and np.count_nonzero(np.abs(plain.descriptors).sum(1) == 0) < low.sum()
    default = dense_sift(img, scales=2)
    np.testing.assert_array_equal(default.descriptors,
                                  dense_sift(img, scales=2, contrast_threshold=0.005).descriptors)
    assert not default.descriptors[plain.norms < 0.005].any()


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "x"])
def test_contrast_threshold_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="contrast_threshold"):
        dense_sift(np.zeros((40, 40), np.float32), contrast_threshold=bad)


# ---------------------------------------------------------------------------------------------
# degenerate images
# ---------------------------------------------------------------------------------------------

def test_flat_image_keeps_zero_descriptors_without_nan():
    res = dense_sift(np.full((60, 80), 0.5, np.float32))
    assert len(res) > 0
    assert np.isfinite(res.descriptors).all()
    assert not res.descriptors.any()
    assert not res.norms.any()


@pytest.mark.parametrize("shape", [(16, 200), (200, 18), (5, 5), (0, 0)])
def test_image_smaller_than_a_patch_gives_no_descriptors(shape):
    sift = dense_sift(np.zeros(shape, np.float32))
    lcs = local_color_statistics(np.zeros(shape + (3,), np.float32))
    for res, dim in [(sift, 128), (lcs, 96)]:
        assert res.descriptors.shape == (0, dim)
        assert res.positions.shape == (0, 2)
        assert res.scales.shape == (0,) and res.norms.shape == (0,)
        assert res.image_shape == shape


def test_smallest_image_with_one_frame():
    assert len(dense_sift(_smooth_noise((19, 19)), scales=3)) == 1


# ---------------------------------------------------------------------------------------------
# invariances
# ---------------------------------------------------------------------------------------------

def test_rotation_by_90_degrees_permutes_bins():
    N = 63  # (N - 1 - 18) divisible by 4: the grid is symmetric, frames map onto frames
    img = _smooth_noise((N, N), seed=4, sigma=1.5)
    a = dense_sift(img, scales=1)
    b = dense_sift(np.ascontiguousarray(np.rot90(img)), scales=1)
    # np.rot90: input pixel (x, y) goes to (y, N-1-x); gradient angles turn by -90 degrees
    lookup = {tuple(p): k for k, p in enumerate(b.positions.tolist())}
    idx = np.array([lookup[(y, N - 1 - x)] for x, y in a.positions.tolist()])
    ha, hb = _bins(a.descriptors), _bins(b.descriptors[idx])
    expected = np.empty_like(ha)
    for bx in range(4):
        for by in range(4):
            for t in range(8):
                expected[:, by, 3 - bx, (t - 2) % 8] = ha[:, bx, by, t]
    np.testing.assert_allclose(hb, expected, atol=2e-4)
    np.testing.assert_allclose(b.norms[idx], a.norms, rtol=1e-4)


def test_contrast_and_brightness_invariance():
    img = _smooth_noise((80, 90), seed=5)
    a = dense_sift(img, scales=2)
    b = dense_sift(0.5 * img + 0.25, scales=2)
    np.testing.assert_allclose(b.descriptors, a.descriptors, atol=1e-4)
    np.testing.assert_allclose(b.norms, 0.5 * a.norms, rtol=1e-3, atol=1e-7)


def test_descriptor_sees_gradient_direction():
    # a ramp increasing along +x: all mass in orientation bin t = 0, spread over all spatial bins
    img = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (40, 1))
    h = _bins(dense_sift(img, scales=1, presmooth=False).descriptors)
    assert np.allclose(h[..., 1:], 0, atol=1e-6)
    assert (h[..., 0] > 0.2).all()
    # the same ramp along +y lands in bin t = 2 (y points down)
    h = _bins(dense_sift(np.ascontiguousarray(img.T), scales=1, presmooth=False).descriptors)
    assert (h[..., 2] > 0.2).all() and np.allclose(np.delete(h, 2, axis=-1), 0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Local Color Statistics
# ---------------------------------------------------------------------------------------------

def _lcs_reference(rgb, b, step):
    """Brute force: per frame and cell, weighted mean/std with box weights of side b."""
    H, W, _ = rgb.shape
    half = b // 2 + 1
    u = np.arange(-half, half + 1)
    w1 = np.clip(b / 2 + 0.5 - np.abs(u), 0, 1)
    w2 = np.outer(w1, w1)
    nx, ny = (W - 1 - 3 * b) // step + 1, (H - 1 - 3 * b) // step + 1
    out = np.zeros((ny * nx, 96))
    for j in range(ny):
        for i in range(nx):
            for by in range(4):
                for bx in range(4):
                    yc, xc = j * step + by * b, i * step + bx * b
                    ys = np.clip(yc + u, 0, H - 1)
                    xs = np.clip(xc + u, 0, W - 1)
                    patch = rgb[np.ix_(ys, xs)].astype(np.float64)
                    mu = (patch * w2[..., None]).sum((0, 1)) / w2.sum()
                    var = ((patch - mu) ** 2 * w2[..., None]).sum((0, 1)) / w2.sum()
                    base = 6 * (4 * by + bx)
                    out[j * nx + i, base:base + 3] = mu
                    out[j * nx + i, base + 3:base + 6] = np.sqrt(var)
    return out


def test_lcs_known_means_and_stds():
    H, W = 40, 44
    yy, xx = np.mgrid[0:H, 0:W]
    rgb = np.zeros((H, W, 3), np.float32)
    rgb[..., 0] = xx % 2            # alternating columns: mean 0.5, std 0.5 in any interior cell
    rgb[..., 1] = 0.3               # constant: mean 0.3, std 0
    rgb[..., 2] = (yy >= 20) * 0.8  # a horizontal edge at row 20
    res = local_color_statistics(rgb, scales=1)
    nx = (W - 1 - 18) // 4 + 1
    d = res.descriptors.reshape(-1, 4, 4, 6)  # (T, by, bx, [muR muG muB sdR sdG sdB])
    # frame (i=1, j=0): cell centres x = 4 + 6 bx >= 4, y = 6 by; every cell fully inside
    f = d[1]
    np.testing.assert_allclose(f[..., 0], 0.5, atol=1e-6)
    np.testing.assert_allclose(f[..., 3], 0.5, atol=1e-6)
    np.testing.assert_allclose(f[..., 1], 0.3, atol=1e-6)
    np.testing.assert_allclose(f[..., 4], 0.0, atol=1e-3)
    # blue: cells centred on rows 0, 6, 12 are dark, row 18 straddles the edge at 20:
    # rows 15..21 weigh (.5, 1, 1, 1, 1, 1, .5); bright rows 20, 21 carry 1.5 of 6 -> mean 0.2
    np.testing.assert_allclose(f[:3, :, 2], 0.0, atol=1e-6)
    np.testing.assert_allclose(f[3, :, 2], 0.8 * 1.5 / 6, atol=1e-6)
    np.testing.assert_allclose(f[3, :, 5], 0.8 * np.sqrt(0.25 * 0.75), atol=1e-4)
    # against an independent brute-force computation everywhere (borders included)
    np.testing.assert_allclose(res.descriptors, _lcs_reference(rgb, 6, 4), atol=2e-4)
    assert res.descriptors.shape == (nx * ((H - 1 - 18) // 4 + 1), 96)


def test_lcs_random_image_matches_brute_force():
    rgb = np.random.default_rng(6).random((37, 45, 3)).astype(np.float32)
    res = local_color_statistics(rgb, scales=1, patch=20, step=3)
    np.testing.assert_allclose(res.descriptors, _lcs_reference(rgb, 5, 3), atol=2e-4)
    assert np.isfinite(res.norms).all()


@pytest.mark.parametrize("shape,params", [((316, 316), {}), ((97, 131), {"step": 3, "patch": 16}),
                                          ((120, 60), {"scales": 3, "scale_factor": 1.7})])
def test_lcs_and_sift_share_the_grid(shape, params):
    rgb = np.stack([_smooth_noise(shape, seed=s) for s in range(3)], axis=-1)
    sift = extract_channel("sift", rgb, **params)
    lcs = extract_channel("lcs", rgb, **params)
    assert len(sift) == len(lcs) > 0
    np.testing.assert_array_equal(sift.positions, lcs.positions)
    np.testing.assert_array_equal(sift.scales, lcs.scales)
    assert lcs.descriptors.shape[1] == 96 and sift.descriptors.shape[1] == 128
    assert sift.image_shape == lcs.image_shape == shape


def test_concurrent_calls_agree():
    # kernels release the GIL and own their buffers: the cache runs two images at once
    from concurrent.futures import ThreadPoolExecutor
    imgs = [_smooth_noise((120, 150), seed=s) for s in range(4)]
    serial = [dense_sift(im).descriptors for im in imgs]
    with ThreadPoolExecutor(2) as pool:
        threaded = list(pool.map(lambda im: dense_sift(im).descriptors, imgs))
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)


def test_extract_channel_and_to_gray():
    rgb = np.stack([_smooth_noise((40, 50), seed=s) for s in range(3)], axis=-1)
    gray = to_gray(rgb)
    np.testing.assert_allclose(gray, 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2],
                               atol=1e-6)
    assert gray.dtype == np.float32
    np.testing.assert_array_equal(extract_channel("sift", rgb, scales=2).descriptors,
                                  dense_sift(gray, scales=2).descriptors)
    assert CHANNELS == ("sift", "lcs")
    u8 = (rgb * 255).astype(np.uint8)
    assert np.abs(to_gray(u8) - gray).max() < 0.01


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

def test_bad_input_names_the_argument():
    ok = np.zeros((30, 30), np.float32)
    with pytest.raises(ValueError, match="gray"):
        dense_sift(np.zeros((30, 30, 3), np.float32))
    with pytest.raises(ValueError, match="gray"):
        dense_sift(np.zeros(30, np.float32))
    bad = ok.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="gray.*NaN"):
        dense_sift(bad)
    with pytest.raises(ValueError, match="gray"):
        dense_sift(np.array([["a"]]))
    with pytest.raises(ValueError, match="rgb"):
        local_color_statistics(ok)
    rgb = np.zeros((30, 30, 3), np.float32)
    rgb[0, 0, 1] = np.inf
    with pytest.raises(ValueError, match="rgb"):
        local_color_statistics(rgb)
    with pytest.raises(ValueError, match="rgb"):
        extract_channel("sift", ok)
    rgb = np.zeros((30, 30, 3), np.float32)
    with pytest.raises(ValueError, match="patch"):
        dense_sift(ok, patch=22)
    with pytest.raises(ValueError, match="step"):
        dense_sift(ok, step=0)
    with pytest.raises(ValueError, match="scales"):
        local_color_statistics(rgb, scales=0)
    with pytest.raises(ValueError, match="scale_factor"):
        dense_sift(ok, scale_factor=1.0)
    with pytest.raises(ValueError, match="window"):
        dense_sift(ok, window="box")
    with pytest.raises(ValueError, match="name"):
        extract_channel("hog", rgb)
    with pytest.raises(ValueError, match="window"):
        extract_channel("lcs", rgb, window="gauss")

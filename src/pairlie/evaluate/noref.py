"""No-reference scores of an image: NIQE exactly as MATLAB's ``niqe`` computes it, and LOE (lightness order).

NIQE (Mittal, Soundararajan, Bovik, "Making a 'completely blind' image quality analyzer", 2013),
as in MATLAB's ``niqe`` with its default model: the Y channel of MATLAB's ``rgb2ycbcr`` rounded to
integers; the image cropped to whole 96×96 blocks (no overlap); at each of two scales the local mean
and deviation under the model's 7×7 Gaussian window (replicated borders) normalise the image, and
every block gives 18 features from asymmetric generalised Gaussian fits (the normalised block and
its products with the 4 neighbours, circularly shifted); the second scale is MATLAB's ``imresize``
by 0.5 (bicubic, antialiased). The score is the distance between the fitted multivariate Gaussian
and the pristine one. Lower is better. The model parameters ship with pairlie
(``niqe_pris_params.npz`` beside this module, Apache-2.0, see ``NIQE_NOTICE.txt``).

LOE (Wang, Zheng, Hu, Li, "Naturalness preserved enhancement of non-uniform illumination images",
TIP 2013): lightness is the max of R, G, B (0–255); both images are resized with MATLAB's
``imresize`` so that the shorter side is 50 pixels, ``round(H·50/min(H, W))`` × ``round(W·50/min(H, W))``
(never enlarged: a shorter side of 50 or less is used as it is); LOE is the mean over pixels of the
number of pixels whose order (``>=``) relative to it differs between input and enhanced image.
Lower is better; 0 for any order-preserving change.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from scipy.ndimage import correlate
from scipy.special import gamma as gamma_fn

NIQE_BLOCK = 96
LOE_SIDE = 50

PROTOCOL = {
    "niqe": "MATLAB niqe with its default model (niqe_pris_params, Apache-2.0): Y of MATLAB rgb2ycbcr rounded, "
    "cropped to whole 96x96 blocks without overlap, 7x7 Gaussian normalisation with replicated borders, "
    "2 scales (MATLAB bicubic antialiased imresize by 0.5); image quantised to uint8 first; lower is better; "
    "n/a for images with fewer than two whole blocks",
    "input_niqe": "NIQE of the low-light input, same protocol",
    "loe": "lightness order error (Wang et al. TIP 2013) of the enhanced image against the input: lightness "
    "max(R,G,B) 0-255, both resized with MATLAB bicubic antialiased imresize to round(H*50/min(H,W)) x "
    "round(W*50/min(H,W)) (never enlarged), mean over pixels of the count of pixels whose >= order "
    "differs; lower is better",
}


class Unscorable(ValueError):
    """The image cannot be scored by this measure; the message says why (shown as "n/a: ...")."""


@cache
def niqe_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mu, cov, window)`` of MATLAB's default NIQE model: 36 means, 36×36 covariance, 7×7 window."""
    # beside this file, not through importlib.resources: that would import pairlie.data (and torch)
    with np.load(Path(__file__).with_name("niqe_pris_params.npz")) as params:
        return params["mu_pris_param"][0], params["cov_pris_param"], params["gaussian_window"]


def y_channel(rgb: np.ndarray) -> np.ndarray:
    """Y of MATLAB's ``rgb2ycbcr`` of an H×W×3 uint8 RGB image, rounded as MATLAB stores it in uint8 (float64)."""
    rgb = rgb.astype(np.float64)
    y = 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0
    return np.floor(y + 0.5)  # MATLAB rounds halves away from zero; y > 0


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


@cache
def _resize_weights(in_len: int, out_len: int) -> np.ndarray:
    """MATLAB ``imresize``'s bicubic weights along one axis as an out×in matrix (antialiased when shrinking)."""
    scale = out_len / in_len
    width = 4.0
    if scale < 1:  # antialiasing: the kernel stretched by 1/scale
        width /= scale

        def kernel(x):
            return scale * _cubic(scale * x)
    else:
        kernel = _cubic
    u = np.arange(1, out_len + 1) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = left[:, None] + np.arange(int(np.ceil(width)) + 2)
    weights = kernel(u[:, None] - taps)
    weights /= weights.sum(axis=1, keepdims=True)
    # symmetric padding: indices reflect at both ends, the edge pixel repeated
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    columns = mirror[(taps.astype(np.int64) - 1) % (2 * in_len)]
    matrix = np.zeros((out_len, in_len))
    np.add.at(matrix, (np.repeat(np.arange(out_len), taps.shape[1]), columns.ravel()), weights.ravel())
    return matrix


def imresize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A 2-D float image resized to ``shape`` (rows, columns) as MATLAB's bicubic ``imresize`` does it."""
    rows = _resize_weights(image.shape[0], shape[0])
    cols = _resize_weights(image.shape[1], shape[1])
    return rows @ image.astype(np.float64) @ cols.T


@cache
def _aggd_table() -> tuple[np.ndarray, np.ndarray]:
    gam = np.arange(0.2, 10.001, 0.001)  # MATLAB's 0.2:0.001:10
    ratio = gamma_fn(2 / gam) ** 2 / (gamma_fn(1 / gam) * gamma_fn(3 / gam))
    return gam, ratio


def aggd_fit(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(alpha, beta_left, beta_right)`` of an asymmetric generalised Gaussian fitted to each row of ``samples``.

    MATLAB's moment matching: alpha is the grid value (0.2:0.001:10) whose ratio
    Γ(2/a)²/(Γ(1/a)Γ(3/a)) is nearest the sample's; a row without negative or positive values gives NaN.
    """
    gam, ratio = _aggd_table()
    squares = samples * samples
    with np.errstate(invalid="ignore", divide="ignore"):
        neg, pos = samples < 0, samples > 0
        left = np.sqrt((squares * neg).sum(axis=1) / neg.sum(axis=1))
        right = np.sqrt((squares * pos).sum(axis=1) / pos.sum(axis=1))
        g = left / right
        rhat = np.abs(samples).mean(axis=1) ** 2 / squares.mean(axis=1)
        rnorm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    # ratio rises strictly with alpha, so the nearest grid value is one of two neighbours; ties go
    # to the lower index and a NaN to the first, as MATLAB's min does
    upper = np.clip(np.searchsorted(ratio, rnorm), 1, len(ratio) - 1)
    lower = upper - 1
    index = np.where((ratio[upper] - rnorm) ** 2 < (ratio[lower] - rnorm) ** 2, upper, lower)
    index[np.isnan(rnorm)] = 0
    alpha = gam[index]
    spread = np.sqrt(gamma_fn(1 / alpha) / gamma_fn(3 / alpha))
    return alpha, left * spread, right * spread


# neighbour products: horizontal, vertical and the two diagonals (MATLAB's circshift offsets)
_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))


def _block_features(normalised: np.ndarray, block: int) -> np.ndarray:
    """18 features of every ``block``×``block`` tile of a normalised image, one row per tile."""
    h, w = normalised.shape
    tiles = normalised.reshape(h // block, block, w // block, block).transpose(0, 2, 1, 3)
    tiles = tiles.reshape(-1, block, block)
    flat = tiles.reshape(len(tiles), -1)
    alpha, bl, br = aggd_fit(flat)
    features = [alpha, (bl + br) / 2]
    for shift in _SHIFTS:
        product = (tiles * np.roll(tiles, shift, axis=(1, 2))).reshape(len(tiles), -1)
        alpha, bl, br = aggd_fit(product)
        mean = (br - bl) * gamma_fn(2 / alpha) / gamma_fn(1 / alpha)
        features += [alpha, mean, bl, br]
    return np.stack(features, axis=1)


def niqe(rgb: np.ndarray) -> float:
    """NIQE of an H×W×3 uint8 RGB image (or an H×W uint8/float gray image, used as Y), as MATLAB's ``niqe``.

    Raises `Unscorable` for images with fewer than two whole 96×96 blocks, or whose blocks
    are all flat (no feature can be fitted).
    """
    y = y_channel(rgb) if rgb.ndim == 3 else rgb.astype(np.float64)
    rows, cols = y.shape[0] // NIQE_BLOCK, y.shape[1] // NIQE_BLOCK
    if rows * cols < 2:
        raise Unscorable(
            f"{y.shape[1]}x{y.shape[0]} holds {rows * cols} whole {NIQE_BLOCK}x{NIQE_BLOCK} block(s); "
            f"NIQE needs at least two ({2 * NIQE_BLOCK}x{NIQE_BLOCK} or {NIQE_BLOCK}x{2 * NIQE_BLOCK})"
        )
    mu_pris, cov_pris, window = niqe_model()
    # Single precision, as MATLAB's niqe computes: the local variance E[x²] − μ² cancels, and in
    # double precision baboon.png scores 3.9e-4 above MATLAB's 5.72957338 (2.5e-6 in single).
    image = y[: rows * NIQE_BLOCK, : cols * NIQE_BLOCK].astype(np.float32)
    features = []
    for scale in (1, 2):
        mu = correlate(image, window, mode="nearest")
        sigma = np.sqrt(np.abs(correlate(image * image, window, mode="nearest") - mu * mu))
        features.append(_block_features((image - mu) / (sigma + 1), NIQE_BLOCK // scale))
        if scale == 1:
            image = imresize(image, (image.shape[0] // 2, image.shape[1] // 2)).astype(np.float32)
    features = np.concatenate(features, axis=1).astype(np.float64)
    complete = features[~np.isnan(features).any(axis=1)]
    if len(complete) < 2:
        raise Unscorable(f"{len(complete)} of {len(features)} blocks have texture to fit; NIQE needs two")
    with np.errstate(invalid="ignore"):
        mu = np.nanmean(features, axis=0)  # MATLAB: nanmean over all blocks, nancov over complete ones
    cov = np.cov(complete, rowvar=False)
    diff = mu_pris - mu
    return float(np.sqrt(diff @ np.linalg.pinv((cov_pris + cov) / 2) @ diff))


def lightness(rgb: np.ndarray) -> np.ndarray:
    """LOE's lightness: max of R, G, B as float64 (0–255 for uint8)."""
    return rgb.max(axis=2).astype(np.float64)


def loe_shape(height: int, width: int) -> tuple[int, int]:
    """The (rows, columns) LOE compares at: the shorter side scaled to 50 pixels, never enlarged."""
    ratio = min(1.0, LOE_SIDE / min(height, width))
    return max(1, round(height * ratio)), max(1, round(width * ratio))


def loe(low: np.ndarray, enhanced: np.ndarray) -> float:
    """Lightness order error of ``enhanced`` against ``low``, two H×W×3 images of one size (uint8)."""
    if low.shape != enhanced.shape:
        raise ValueError(f"LOE compares images of one size, got {low.shape} and {enhanced.shape}")
    shape = loe_shape(*low.shape[:2])
    a, b = (lightness(im) for im in (low, enhanced))
    if shape != a.shape:
        a, b = imresize(a, shape), imresize(b, shape)
    a, b = a.ravel(), b.ravel()
    errors = 0
    for start in range(0, len(a), 1024):  # 1024 rows of the pixel-pair matrix at a time
        stop = start + 1024
        errors += np.count_nonzero((a[start:stop, None] >= a) != (b[start:stop, None] >= b))
    return errors / len(a)

"""Strip images → reflectance profiles, for readers that deliver camera images instead of line scans.

Does: reduce images (N, H, W) or (N, H, W, 3) to profiles (N, W) with a robust across-width statistic:
the trimmed mean (20 % cut at each end) of the central band of rows (the middle half by default). The
central band avoids the dark cassette housing at the strip edges and keeps the "smile" (lines curving
towards the edges) below a pixel; trimming removes dust specks without the quantisation bias of a
median on 8-bit data. RGB images use the green channel, where colloidal gold (~525 nm) absorbs most.
uint8 / uint16 images are scaled by their full-scale value; float images must already be reflectance.

Does not: locate the strip in a free-form photo (the reader's fixture fixes the crop), or interpret.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gateway.interpret.errors import InputError
from gateway.interpret.gold import StripResults, interpret_strips
from kuaijian_schema.specs import StripSpec

__all__ = ["interpret_strip_images", "profiles_from_images"]

_GREEN = 1
_CHUNK_BYTES = 4 << 20


def profiles_from_images(
    images: npt.NDArray[np.generic], *, band: float = 0.5, trim: float = 0.2
) -> npt.NDArray[np.float64]:
    """Profiles (N, W) float64 from images (N, H, W[, 3]) by a trimmed mean over the central rows."""
    if not isinstance(images, np.ndarray):
        raise InputError(f"images must be a numpy array (N, H, W[, 3]), got {type(images).__name__}")
    if not 0 < band <= 1 or not 0 <= trim < 0.5:
        raise InputError(f"band must be in (0, 1] and trim in [0, 0.5), got {band}, {trim}")
    if images.ndim == 4:
        if images.shape[3] != 3:
            raise InputError(f"colour images must have 3 channels (N, H, W, 3), got shape {images.shape}")
        images = images[..., _GREEN]
    elif images.ndim != 3:
        raise InputError(f"images must have shape (N, H, W) or (N, H, W, 3), got shape {images.shape}")
    if images.size == 0:
        raise InputError(f"images is empty (shape {images.shape})")
    kind = images.dtype.kind
    if kind == "u" and images.dtype.itemsize <= 2:
        scale = 1.0 / float(2 ** (8 * images.dtype.itemsize) - 1)
    elif kind == "f":
        scale = 1.0
    else:
        raise InputError(f"images must be uint8, uint16 or float reflectance, got dtype {images.dtype}")
    n, height, width = images.shape
    rows = max(1, round(height * band))
    top = (height - rows) // 2
    cut = int(rows * trim)
    out = np.empty((n, width))
    step = max(1, _CHUNK_BYTES // max(1, rows * width * 4))
    for s in range(0, n, step):
        part = images[s : s + step, top : top + rows].astype(np.float32)
        part.sort(axis=1)
        kept = part[:, cut : rows - cut]
        out[s : s + step] = kept.mean(axis=1, dtype=np.float64) * scale
    if not np.isfinite(out).all():
        bad = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
        raise InputError(f"image {bad} contains NaN or inf in its central band")
    return out


def interpret_strip_images(
    images: npt.NDArray[np.generic], spec: StripSpec, *, median: int = 0
) -> StripResults:
    """`interpret_strips` on the profiles of `images` (W must equal spec.length), with its optional
    running-median pre-filter `median` (0, 3 or 5)."""
    return interpret_strips(profiles_from_images(images), spec, median=median)

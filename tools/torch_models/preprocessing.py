"""The official dataset loaders' feature arithmetic that several models share, in float32 NumPy
as those loaders compute it."""

import numpy as np
import torch


def l2_normalize(x):
    """Row L2 normalisation with the official eps ADDED to the norm, x / (‖x‖ + 1e-5), in
    float32 (not clamped as F.normalize does)."""
    x = np.asarray(x, dtype=np.float32)
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + np.float32(1e-5))


def tef(n):
    """Temporal endpoint features (n, 2): start = i / n, end = start + float32(1 / n) (the
    double 1 / n rounded to float32)."""
    start = np.arange(n, dtype=np.float32) / np.float32(n)
    return np.stack([start, start + np.float32(1.0 / n)], 1)


def one_sample(video, query):
    """(video, video_mask, query, query_mask) with batch dimension 1, every row valid."""
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None]
    return t(video), torch.ones(1, len(video)), t(query), torch.ones(1, len(query))

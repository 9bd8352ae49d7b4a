"""An independent NumPy forward pass of the two-column AlexNet, written from PAPER.md section 1.

Slow (im2col with einsum) and only for tiny networks. Parameters use the project's layout:
per-column kernels with a leading column axis, fc8 kernel (C, fc7 units per column, K).
"""

from __future__ import annotations

import numpy as np


def conv(x, kernel, stride, pad):
    """x (B, H, W, I), kernel (kh, kw, I, O), pad ((top, bottom), (left, right))."""
    x = np.pad(x, ((0, 0), pad[0], pad[1], (0, 0)))
    kh, kw = kernel.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    windows = windows[:, ::stride, ::stride]  # (B, Ho, Wo, I, kh, kw)
    return np.einsum("bhwiyx,yxio->bhwo", windows, kernel, optimize=True)


def lrn(x, n, k, alpha, beta):
    """The formula of paper section 3.3, summing over maps of the same column only."""
    maps = x.shape[-1]
    out = np.empty_like(x)
    for i in range(maps):
        lo, hi = max(0, i - n // 2), min(maps - 1, i + n // 2)
        total = np.sum(x[..., lo:hi + 1] ** 2, axis=-1)
        out[..., i] = x[..., i] / (k + alpha * total) ** beta
    return out


def max_pool(x, size=3, stride=2):
    windows = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(1, 2))
    return windows[:, ::stride, ::stride].max(axis=(-1, -2))


def forward(params, images, lrn_params=(5, 2.0, 1e-4, 0.75), conv1_pad=((0, 3), (0, 3))):
    """Logits of the two-column (or one-column) network in evaluation mode."""
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    p = {layer: {name: np.asarray(v, np.float64) for name, v in d.items()}
         for layer, d in params.items()}
    columns = p["conv1"]["kernel"].shape[0]
    x = np.asarray(images, np.float64)
    pool1, pool2 = [], []
    for c in range(columns):
        h = relu(conv(x, p["conv1"]["kernel"][c], 4, conv1_pad) + p["conv1"]["bias"][c])
        pool1.append(max_pool(lrn(h, *lrn_params)))
    for c in range(columns):  # conv2: own column only
        h = relu(conv(pool1[c], p["conv2"]["kernel"][c], 1, ((2, 2), (2, 2)))
                 + p["conv2"]["bias"][c])
        pool2.append(max_pool(lrn(h, *lrn_params)))
    both = np.concatenate(pool2, axis=-1)  # conv3: both columns
    pool5 = []
    for c in range(columns):
        h = relu(conv(both, p["conv3"]["kernel"][c], 1, ((1, 1), (1, 1))) + p["conv3"]["bias"][c])
        h = relu(conv(h, p["conv4"]["kernel"][c], 1, ((1, 1), (1, 1))) + p["conv4"]["bias"][c])
        h = relu(conv(h, p["conv5"]["kernel"][c], 1, ((1, 1), (1, 1))) + p["conv5"]["bias"][c])
        pool5.append(max_pool(h))
    flat = np.concatenate(pool5, axis=-1).reshape(len(x), -1)
    fc6 = np.concatenate([relu(flat @ p["fc6"]["kernel"][c] + p["fc6"]["bias"][c])
                          for c in range(columns)], axis=-1)
    fc7 = [relu(fc6 @ p["fc7"]["kernel"][c] + p["fc7"]["bias"][c]) for c in range(columns)]
    return sum(fc7[c] @ p["fc8"]["kernel"][c] for c in range(columns)) + p["fc8"]["bias"]

"""A validation split carved from the training images of a quadrun.data.images.ImageData.

    data = load_images("digits", data_dir, device, train_size=200 + 300)
    data, val_x, val_y = carve_validation(data, 300, seed=0)   # 200 train, 300 validation

The validation images are drawn stratified by class (each class keeps its share), fixed by
`seed`, and removed from the training images; the normalisation statistics are recomputed
from the training images that remain, so nothing about the validation images reaches
training. The test images are untouched.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Tuple

import numpy as np
import torch

from quadrun.data.images import ImageData
from quadrun.errors import ConfigError


def stratified_indices(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """`size` indices of `y` (sorted), each class drawn in proportion to its count
    (largest remainders get the leftover places), random within a class, fixed by `seed`."""
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * size / len(y)
    take = np.floor(exact).astype(int)
    order = np.argsort(-(exact - take), kind="stable")
    take[order[:size - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(y == c), k, replace=False)
              for c, k in zip(classes, take) if k]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=int)


def carve_validation(data: ImageData, size: int, seed: int
                     ) -> Tuple[ImageData, torch.Tensor, torch.Tensor]:
    """(data without the validation images, validation images, their labels)."""
    n = len(data.train_y)
    if size <= 0:
        return data, data.train_x[:0], data.train_y[:0]
    if size >= n:
        raise ConfigError(f"relinear.val_size: {size} leaves no training images of the {n} "
                          "available; must be smaller")
    y = data.train_y.cpu().numpy()
    val = stratified_indices(y, size, seed)
    keep = np.setdiff1d(np.arange(n), val)
    val_t = torch.from_numpy(val).to(data.train_y.device)
    keep_t = torch.from_numpy(keep).to(data.train_y.device)
    train_x = data.train_x[keep_t]
    scale = 255.0 if train_x.dtype == torch.uint8 else 1.0
    mean, std = [], []
    for ch in range(train_x.shape[1]):           # one channel at a time: float64 is large
        pixels = train_x[:, ch].double() / scale
        mean.append(pixels.mean())
        std.append(pixels.std(unbiased=False))
    mean, std = torch.stack(mean).float(), torch.stack(std).float()
    out = replace(data, train_x=train_x, train_y=data.train_y[keep_t], mean=mean, std=std)
    return out, data.train_x[val_t], data.train_y[val_t]


def batches(data: ImageData, x: torch.Tensor, y: torch.Tensor, batch_size: int):
    """Normalised (x, y) batches of held-out images, as data.test_batches gives the test set."""
    for i in range(0, len(y), batch_size):
        yield data.normalise(x[i:i + batch_size]), y[i:i + batch_size]

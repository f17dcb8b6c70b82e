"""Image classification datasets held on the training device, with batched augmentation.

    data = load_images("digits", data_dir, device, train_size=1000)
    batches = TensorBatches([data.train_x, data.train_y], 128,
                            transform=Augment(data, pad=1, flip=False))
    for x, y in data.test_batches(1000): ...       # normalised, no augmentation

Datasets:
- ``cifar10``: the official archive (quadrun.data.cifar), 50k/10k images 3x32x32.
- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes). It is
  the cpu-scale stand-in for CIFAR-10 because it is real image data with 10 classes that
  ships inside an installed package (no network, no file to fetch), and it is small enough
  for a whole ablation of 20-layer (Q)ResNets (every strategy, several seeds) on a CPU.
  The split is fixed (seeded by `split_seed`, stratified), so every run sees the same test
  set; a smaller `train_size` leaves headroom between strategies.
- ``synthetic``: generated class templates plus noise, for smoke tests (seconds).

Images are stored as they come (uint8 for CIFAR, float in [0, 1] otherwise) and turned
into normalised float batches on the device: pad + random crop and horizontal flip are
tensor operations on the whole batch, no per-sample Python transforms.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch

from quadrun.errors import ConfigError

DATASETS = ("cifar10", "digits", "synthetic")


@dataclass
class ImageData:
    name: str
    train_x: torch.Tensor      # (N, C, H, W), uint8 or float in [0, 1], on the device
    train_y: torch.Tensor      # (N,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: torch.Tensor         # (C,) per-channel mean of the training images in [0, 1]
    std: torch.Tensor
    num_classes: int
    channels_last: bool = False

    @property
    def shape(self) -> tuple:
        return tuple(self.train_x.shape[1:])

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 / [0, 1] images -> float, per-channel standardised (in the target layout)."""
        x = x.float()
        if self.train_x.dtype == torch.uint8:
            x = x / 255.0
        x = (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def test_batches(self, batch_size: int) -> Iterator[tuple]:
        for i in range(0, len(self.test_y), batch_size):
            yield self.normalise(self.test_x[i:i + batch_size]), self.test_y[i:i + batch_size]


def random_crop(x: torch.Tensor, pad: int, gen: Optional[torch.Generator] = None) -> torch.Tensor:
    """Zero-pad every image by `pad` pixels and cut a random HxW window from each, as one
    gather over the whole batch."""
    if pad <= 0:
        return x
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device, generator=gen)
    rows = (dy + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chan = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, chan, rows, cols]


def random_flip(x: torch.Tensor, gen: Optional[torch.Generator] = None) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    flip = torch.rand(x.shape[0], device=x.device, generator=gen) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


class Augment:
    """TensorBatches transform: (x, y) -> (normalise(flip(crop(x))), y), batched on device.

    Cropping happens before normalisation, so the padding is black, as in the usual
    per-image pipeline. Randomness comes from torch's global RNG (checkpointed by fit)."""

    def __init__(self, data: ImageData, pad: int = 4, flip: bool = True):
        self.data, self.pad, self.flip = data, pad, flip

    def __call__(self, batch: tuple) -> tuple:
        x, y = batch
        x = random_crop(x, self.pad)          # on the stored dtype (uint8 for CIFAR)
        if self.flip:
            x = random_flip(x)
        return self.data.normalise(x), y


def _stats(x: np.ndarray) -> tuple:
    x = x.astype(np.float64) / (255.0 if x.dtype == np.uint8 else 1.0)
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))


def _subsample(x, y, n: int, seed: int):
    if not n or n >= len(y):
        return x, y
    idx = np.random.default_rng(seed).permutation(len(y))[:n]
    return x[idx], y[idx]


def _digits(train_size: int, split_seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]   # (1797, 1, 8, 8) in [0, 1]
    y = d.target.astype(np.int64)
    n = train_size or int(0.8 * len(y))
    if not 10 <= n <= len(y) - 10:
        raise ConfigError(f"relinear.train_size: {n} does not fit the 1797 digits; "
                          f"must be between 10 and {len(y) - 10} (0: 80%)")
    return train_test_split(x, y, train_size=n, stratify=y, random_state=split_seed)


def _synthetic(train_size: int, test_size: int, size: int, split_seed: int, classes: int = 10):
    """Each class is a fixed smooth random 3-channel template (a 3x3 grid of colours,
    bilinearly upsampled, so a small shift keeps it recognisable); images are template +
    pixel noise, clipped to [0, 1]. Learnable in a few dozen steps, not trivially."""
    rng = np.random.default_rng(split_seed)
    coarse = torch.from_numpy(rng.uniform(0, 1, (classes, 3, 3, 3)))
    templates = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                                align_corners=True).numpy()

    def draw(n):
        y = rng.integers(0, classes, n)
        x = np.clip(templates[y] + rng.normal(0, 0.3, (n, 3, size, size)), 0, 1)
        return x.astype(np.float32), y.astype(np.int64)

    x_tr, y_tr = draw(train_size or 512)
    x_te, y_te = draw(test_size)
    return x_tr, x_te, y_tr, y_te


def load_images(name: str, data_dir: str, device: torch.device, *, train_size: int = 0,
                test_size: int = 0, download: bool = True, split_seed: int = 0,
                image_size: int = 8, channels_last: bool = False) -> ImageData:
    """Load `name` onto `device`. `train_size` 0 keeps the whole training split;
    `test_size` caps the test set (0: all); `image_size` is for ``synthetic`` only."""
    if name == "cifar10":
        from quadrun.data.cifar import load_cifar10

        x_tr, y_tr, x_te, y_te, _ = load_cifar10(data_dir, download)
        x_tr, y_tr = _subsample(x_tr, y_tr, train_size, split_seed)
    elif name == "digits":
        x_tr, x_te, y_tr, y_te = _digits(train_size, split_seed)
    elif name == "synthetic":
        x_tr, x_te, y_tr, y_te = _synthetic(train_size, test_size or 256, image_size, split_seed)
    else:
        raise ConfigError(f"dataset: unknown {name!r}; must be one of: {', '.join(DATASETS)}")
    if test_size and test_size < len(y_te):
        x_te, y_te = x_te[:test_size], y_te[:test_size]
    mean, std = _stats(x_tr)

    def put(a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    return ImageData(name, put(x_tr), put(y_tr), put(x_te), put(y_te),
                     torch.tensor(mean, dtype=torch.float32, device=device),
                     torch.tensor(std, dtype=torch.float32, device=device),
                     int(max(y_tr.max(), y_te.max()) + 1), channels_last)

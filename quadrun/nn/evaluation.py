"""Classifier evaluation: accuracy over batches, and BatchNorm with batch statistics.

    acc = accuracy(model, data.test_batches(500), len(data.test_y))
    with batch_statistics(model):        # BN normalises with each batch's own statistics
        acc_bs = accuracy(model, data.test_batches(500), len(data.test_y))
"""
from __future__ import annotations

import contextlib
from typing import Iterable

import torch
from torch import nn


@contextlib.contextmanager
def batch_statistics(model: nn.Module):
    """BatchNorm layers normalise with each batch's own statistics (running ones untouched)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in bns]
    for m in bns:
        m.train()
        m.track_running_stats = False
    try:
        yield model
    finally:
        for m, (training, track) in zip(bns, saved):
            m.training, m.track_running_stats = training, track


def accuracy(model: nn.Module, batches: Iterable, count: int) -> float:
    """Accuracy in percent over (x, y) batches of `count` examples in all (non-finite
    logits count as wrong)."""
    correct = None
    for x, y in batches:
        logits = model(x).float()
        ok = ((logits.argmax(1) == y) & torch.isfinite(logits).all(1)).sum()
        correct = ok if correct is None else correct + ok
    return 100.0 * float(correct if correct is not None else 0) / count

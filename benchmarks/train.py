"""Training-step throughput: quadrun's QResNet20 / ResNet20 versus a reference loop.

    python benchmarks/train.py --device cpu --steps 2 --rounds 7 --compile
    python benchmarks/train.py --device cuda --steps 40 --rounds 5 --breakdown [--precision bf16]

quadrun's path is the real one: `quadrun.training.fit` over device-resident CIFAR-shaped
uint8 images (`TensorBatches` + batched `Augment`), the fused quadratic conv, param groups
by role, losses summed on the device, channels_last convs (faster on CPU as well as on
CUDA: see the report), on CUDA each forward and backward replayed as a CUDA graph, bf16
autocast on CUDA when asked; with --compile also the same path with compile=true.

The reference loop is written here the way the public ReLinear code trains: each quadratic
layer is three separate convs (r, g, b), images come through a torch DataLoader with
per-sample transforms (pad + random crop, flip, to-tensor, normalise, in Python), fp32,
and `loss.item()` every step. Same model shape, batch and device.

Each method trains 1 + `rounds` epochs of `steps` steps, each epoch timed; the first is the
warm-up (cudnn autotune, CUDA graph capture, compile, DataLoader workers). On a CPU the
methods take turns, one epoch (one `fit` call) each per round, so slow drifts of a shared
machine hit them alike; on CUDA each method trains all its epochs in one `fit` call, as a
run does, so its CUDA graphs are captured once, in the warm-up (--interleaved chooses).
The median and the fastest epoch are reported, each with the ratios (on a busy machine the
fastest is the least disturbed).
On CUDA quadrun's steps replay CUDA graphs (its default); `--breakdown` adds the same
training without them.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from quadrun.artifacts import RunContext
from quadrun.devices import Runtime
from quadrun.schema import TrainConfig
from quadrun.data.images import Augment, ImageData
from quadrun.nn.quadratic import param_groups
from quadrun.nn.resnet import BLOCKS, ShortcutA, count_parameters, qresnet, resnet
from quadrun.training import TensorBatches, fit

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


# -- the reference: three convs per quadratic layer, per-sample transforms ----------------------
class RefQuadConv(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv_r = nn.Conv2d(cin, cout, 3, stride, 1, bias=True)
        self.conv_g = nn.Conv2d(cin, cout, 3, stride, 1, bias=True)
        self.conv_b = nn.Conv2d(cin, cout, 3, stride, 1, bias=True)
        nn.init.zeros_(self.conv_g.weight), nn.init.ones_(self.conv_g.bias)
        nn.init.zeros_(self.conv_b.weight), nn.init.zeros_(self.conv_b.bias)

    def forward(self, x):
        return self.conv_r(x) * self.conv_g(x) + self.conv_b(x ** 2)


class RefBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = RefQuadConv(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = RefQuadConv(cout, cout, 1), nn.BatchNorm2d(cout)
        self.shortcut = ShortcutA(cin, cout, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class RefQResNet(nn.Module):
    def __init__(self, depth=20, num_classes=10):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        layers, cin = [], 16
        for i, stride in enumerate((1, 2, 2)):
            cout = 16 * 2 ** i
            for j in range(BLOCKS[depth]):
                layers.append(RefBlock(cin, cout, stride if j == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layers(F.relu(self.bn(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class PerSampleCifar(torch.utils.data.Dataset):
    """HWC uint8 images, transformed one at a time in Python (as torchvision would)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels
        self.mean = np.array(MEAN, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.array(STD, dtype=np.float32).reshape(3, 1, 1)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        img = np.pad(self.images[i], ((4, 4), (4, 4), (0, 0)))           # RandomCrop(32, 4)
        top, left = np.random.randint(0, 9, 2)
        img = img[top:top + 32, left:left + 32]
        if np.random.rand() < 0.5:                                        # RandomHorizontalFlip
            img = img[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float() / 255  # ToTensor
        x = (x - torch.from_numpy(self.mean)) / torch.from_numpy(self.std)                # Normalize
        return x, int(self.labels[i])


def reference_train(model, loader, opt, device, epochs: int, tick) -> None:
    """The public code's loop: host batches moved per step, fp32, the batch accuracy and
    `.item()` of loss and accuracy every step. `tick()` after each epoch."""
    model.train()
    for _ in range(epochs):
        total = 0.0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            prec = (out.float().topk(1, 1).indices[:, 0] == y).float().sum() * (100.0 / len(y))
            total += loss.item() + 0 * prec.item()
        tick()


# -- quadrun's path ------------------------------------------------------------------------------------
def quadrun_runner(model, images: torch.Tensor, labels: torch.Tensor, args, device, tmp: Path,
                   cuda_graphs: bool = True, compile: bool = False):
    """Functions `train(epochs, tick)`: `epochs` epochs of `len(images) / batch` steps
    through `fit` (tick at each epoch end, from `fit`'s evaluation hook), and for
    --breakdown the bare forward/backward/SGD steps on the same augmented batches, and the
    augmented batches alone."""
    data = ImageData("bench", images, labels, images[:1], labels[:1],
                     torch.tensor(MEAN, device=device), torch.tensor(STD, device=device), 10,
                     channels_last=args.channels_last)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    batches = TensorBatches([images, labels], args.batch, transform=Augment(data, 4, True))
    cfg = OmegaConf.create({"experiment": "bench", "scale": "bench", "seed": 0, "data_dir": "data"})
    runtime = Runtime(device, precision=args.precision, compile=compile, cuda_graphs=cuda_graphs)
    groups = param_groups(model, 0.1, 1e-4, role_lr={"quad_g": 1e-5, "quad_b": 1e-5})

    def train(epochs, tick):
        tc = TrainConfig(epochs=epochs, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                         schedule="none", log_every=10 ** 9)
        ctx = RunContext(tmp / f"run{id(model)}_{cuda_graphs}_{compile}", cfg, runtime)
        fit(model, batches, lambda m, b: F.cross_entropy(m(b[0]), b[1]), ctx, tc,
            param_groups=groups, checkpoint=False, evaluate=lambda m: tick() or {})

    bare_model = copy.deepcopy(model)  # its own weights: the methods train side by side
    bare_opt = torch.optim.SGD(param_groups(bare_model, 0.1, 1e-4, role_lr={"quad_g": 1e-5, "quad_b": 1e-5}),
                               lr=0.1, momentum=0.9, weight_decay=1e-4)

    def bare(epochs, tick):
        for _ in range(epochs):
            for x, y in batches.epoch(torch.Generator().manual_seed(0)):
                loss = F.cross_entropy(bare_model(x), y)
                bare_opt.zero_grad(set_to_none=True)
                loss.backward()
                bare_opt.step()
            tick()

    def batches_only(epochs, tick):
        for _ in range(epochs):
            for _ in batches.epoch(torch.Generator().manual_seed(0)):
                pass
            tick()
    return train, bare, batches_only


def timed_epochs(train, epochs: int, device) -> list:
    """Seconds of each epoch of `train(epochs, tick)`; the device is synchronised at each
    tick, so every epoch's GPU work is inside its own time."""
    stamps = []

    def tick():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())
    tick()
    train(epochs, tick)
    return [b - a for a, b in zip(stamps, stamps[1:])]


def epoch_times(methods: dict, epochs: int, device, interleaved: bool) -> dict:
    """{method: seconds of each epoch}. Interleaved: round by round, each method trains one
    epoch in a fresh call, so slow drifts of a shared machine hit all alike. Otherwise each
    method trains all its epochs in one call, as a run does; on CUDA that keeps one graph
    capture per method, out of the timed epochs."""
    if not interleaved:
        return {k: timed_epochs(train, epochs, device) for k, train in methods.items()}
    times = {k: [] for k in methods}
    for _ in range(epochs):
        for k, train in methods.items():
            times[k] += timed_epochs(train, 1, device)
    return times


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=4, help="training steps per timed epoch")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--workers", type=int, default=-1,
                   help="reference DataLoader workers (-1: 0 on CPU, 4 on CUDA)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="quadrun's autocast on CUDA (the reference stays fp32)")
    p.add_argument("--interleaved", default=None, action=argparse.BooleanOptionalAction,
                   help="one epoch per call, methods in turn (default on a CPU) or all epochs "
                        "in one call per method (default on CUDA: one graph capture per method)")
    p.add_argument("--compile", action="store_true",
                   help="also time quadrun's QResNet20 with compile=true (torch.compile)")
    p.add_argument("--breakdown", action="store_true",
                   help="also time quadrun's bare steps (no fit loop) and its batches alone")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="quadrun's convs in NCHW instead of channels_last (the experiment's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    workers = args.workers if args.workers >= 0 else (4 if device.type == "cuda" else 0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    n = args.steps * args.batch
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    images = torch.from_numpy(hwc.transpose(0, 3, 1, 2).copy()).to(device)
    y = torch.from_numpy(labels).to(device)

    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="quadrun_bench_"))
    q_model, r_model, ref_model = qresnet(20), resnet(20), RefQResNet(20).to(device)
    assert count_parameters(ref_model) == count_parameters(q_model)
    ref_opt = torch.optim.SGD([
        {"params": [p for n_, p in ref_model.named_parameters() if "conv_g" not in n_ and "conv_b" not in n_]},
        {"params": [p for n_, p in ref_model.named_parameters() if "conv_g" in n_ or "conv_b" in n_],
         "lr": 1e-5}], lr=0.1, momentum=0.9, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(PerSampleCifar(hwc, labels), batch_size=args.batch,
                                         shuffle=True, num_workers=workers,
                                         pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0)
    q_fit, q_bare, q_batches = quadrun_runner(q_model, images, y, args, device, tmp)
    methods = {
        "quadrun QResNet20": q_fit,
        "quadrun ResNet20": quadrun_runner(r_model, images, y, args, device, tmp)[0],
        "reference QResNet20": lambda epochs, tick: reference_train(ref_model, loader, ref_opt,
                                                                    device, epochs, tick),
    }
    if args.compile:
        methods["quadrun QResNet20 compiled"] = quadrun_runner(
            qresnet(20), images, y, args, device, tmp, compile=True)[0]
    if args.breakdown:
        if device.type == "cuda":
            methods["  QResNet20 without graphs"] = quadrun_runner(
                qresnet(20), images, y, args, device, tmp, cuda_graphs=False)[0]
        methods.update({"  QResNet20 bare steps": q_bare, "  augmented batches": q_batches})
    interleaved = args.interleaved if args.interleaved is not None else device.type == "cpu"
    times = {k: v[1:] for k, v in epoch_times(methods, 1 + args.rounds, device, interleaved).items()}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), batch {args.batch}, {args.steps} steps/epoch, "
          f"{args.rounds} timed epochs, threads {torch.get_num_threads()}, reference workers "
          f"{workers}, quadrun precision {args.precision}, channels_last {args.channels_last}, "
          f"{'interleaved' if interleaved else 'continuous'} epochs")
    out = {}
    for label, pick in (("median epoch", statistics.median), ("fastest epoch", min)):
        sec = {k: pick(v) for k, v in times.items()}
        rate = {k: n / v for k, v in sec.items()}
        print(f"{label}:")
        for k in methods:
            print(f"  {k:22s} {rate[k]:9.1f} images/s   {1000 * sec[k] / args.steps:8.1f} ms/step")
        speedup = rate["quadrun QResNet20"] / rate["reference QResNet20"]
        step_ratio = sec["quadrun QResNet20"] / sec["quadrun ResNet20"]
        print(f"  quadrun QResNet20 / reference QResNet20 images/s: {speedup:.2f}x")
        if args.compile:
            compiled = rate["quadrun QResNet20 compiled"] / rate["reference QResNet20"]
            print(f"  ... with compile=true:                           {compiled:.2f}x")
        print(f"  quadrun QResNet20 / ResNet20 step time:          {step_ratio:.2f}x")
        out[label] = {"images_per_s": rate, "speedup_vs_reference": speedup,
                      "qresnet_over_resnet": step_ratio}
    return out

if __name__ == "__main__":
    main()

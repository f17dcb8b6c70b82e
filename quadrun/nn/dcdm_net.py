"""DCDM's fully convolutional networks (2-D and 3-D) and the scale-invariant loss.

`PaperNet` (arch "paper", and "paper128"): the authors' networks exactly (Kaneda et al.
2023, public code ayano721/2023_DCDM, src/train_N64.py and train_N128.py), in their names:

    c0 = conv(x)                                   # linear, 1 -> 16
    la = relu(conv(c0));  lb = relu(conv(la))
    `pre` times:  la = relu(conv(lb)) + la;  lb = relu(conv(la))
    apa = avgpool2(lb)
    `coarse` times:  apb = relu(conv(apa));  apa = relu(conv(apb)) + apa
    upa = upsample2_nearest(apa) + lb
    `post` times:  upb = relu(conv(upa));  upa = relu(conv(upb)) + upa
    out = dense(upa)                               # per cell, 16 -> 1

with 3^d convolutions, zero padding ('same'), 16 filters, Keras' initialisation (Glorot
uniform kernels, zero biases) and the input r / ||r|| as it is (no rescaling). "paper"
(their N = 64 model): pre 1, coarse 3, post 2, 15 convolutions, 97,457 parameters in 3-D;
"paper128" (their N = 128 model): pre 2, coarse 5, post 3, 23 convolutions, 152,881.
`convs` lists the convolutions in the order of their Keras layers (conv3d, conv3d_1, ...),
so their trained weights map one to one (kernel (3, 3, 3, in, out) -> (out, in, 3, 3, 3)).
A grid of odd width pools with 'same' padding (the last window averages what it holds) and
the upsampled grid is cropped to the skip's size. Its receptive field is fixed, so it acts
like a fixed local preconditioner: its iteration counts grow with n.

`DCDMNet` (arch "resnet"): quadrun's first version of the published layers (called
"paper" until 2026-12): a linear first convolution, `blocks` residual blocks
x + relu(conv(relu(conv(x)))) from it (a skip around each, the authors have none around
the first pair), one pool level with blocks + 1 such blocks, nearest upsampling added to
the full-resolution features, `blocks` more, a per-cell 16 -> 1; its input rescaled to a
fixed RMS (`rescale`).

`MultilevelDCDMNet` (arch "multilevel"): the same blocks arranged as a V-cycle whose depth
follows the grid: pool by 2 until the grid is at most `coarsest` cells across, with ONE set
of weights shared by every level (like a multigrid cycle). A net trained at n runs at 2n
with one more level, so its reach grows with the grid, as a multigrid preconditioner's does.
A level deeper than any seen in training can stall DCDM, hence the optional depth cap
(`max_levels`); measurements: benchmarks/results/dcdm_notes.md.

`AdditiveDCDMNet` (arch "additive"): a learned, linear, symmetric positive semi-definite
multilevel preconditioner (BPX-like: the same learned local operator K^T K on every level,
bilinear interpolation and its adjoint between levels, a learned gain per level). Trained
with the same loss and data; its depth follows the grid. It is the cpu-scale default; what
was measured with it, and the variants tried and dropped, are in
benchmarks/results/dcdm_notes.md.

All take the normalised residual on the grid (batch, 1, n, ...) with zeros on solid cells
and return a direction of the same shape; the solver keeps only the fluid cells.

`scale_invariant_loss`: mean over samples of ||b - (q.b / q.A q) A q||^2, q = f(b); the
optimal step along q makes it independent of q's scale.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ARCHS = ("paper", "paper128", "resnet", "multilevel", "additive")
PAPER_DEPTHS = {"paper": (1, 3, 2), "paper128": (2, 5, 3)}   # (pre, coarse, post) pairs


def _conv(dim: int, cin: int, cout: int, k: int = 3) -> nn.Module:
    kind = nn.Conv2d if dim == 2 else nn.Conv3d
    return kind(cin, cout, k, padding=k // 2)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2) if x.dim() == 4 else F.avg_pool3d(x, 2)


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[2:], mode="nearest")


class ResBlock(nn.Module):
    """x + relu(conv(relu(conv(x))))."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.a = _conv(dim, width, width)
        self.b = _conv(dim, width, width)

    def forward(self, x):
        return x + F.relu(self.b(F.relu(self.a(x))))


INPUT_RMS = 1.0 / 64   # the root-mean-square of a unit-norm residual on a 64^2 grid


def rescale(r: torch.Tensor) -> torch.Tensor:
    """r scaled to a fixed root-mean-square per sample (INPUT_RMS). The solver feeds
    r / ||r||, whose entries shrink like 1 / sqrt(cells) as the grid grows; rescaling makes
    the net see the same magnitudes at every n (and its direction independent of r's
    scale), and the magnitudes of a unit-norm 64^2 residual, where the nets train well."""
    dims = tuple(range(1, r.dim()))
    return r * (INPUT_RMS / r.pow(2).mean(dims, keepdim=True).sqrt().clamp_min(1e-30))


def _blocks(dim: int, width: int, count: int) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(dim, width) for _ in range(count)])


class PaperNet(nn.Module):
    """The authors' network (module docstring): `pre`, `coarse`, `post` residual pairs."""

    def __init__(self, dim: int = 3, width: int = 16, pre: int = 1, coarse: int = 3,
                 post: int = 2):
        super().__init__()
        self.dim, self.depths = dim, (pre, coarse, post)
        count = 1 + 2 + 2 * (pre + coarse + post)
        self.convs = nn.ModuleList([_conv(dim, 1, width)] +
                                   [_conv(dim, width, width) for _ in range(count - 1)])
        self.dense = _conv(dim, width, 1, k=1)
        for layer in list(self.convs) + [self.dense]:   # Keras: glorot_uniform, zeros
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _pool(self, x):
        pool = F.avg_pool2d if x.dim() == 4 else F.avg_pool3d
        return pool(x, 2, ceil_mode=True, count_include_pad=False)

    def forward(self, x):
        pre, coarse, post = self.depths
        conv = iter(self.convs)
        c0 = next(conv)(x)
        la = F.relu(next(conv)(c0))
        lb = F.relu(next(conv)(la))
        for _ in range(pre):
            la = F.relu(next(conv)(lb)) + la
            lb = F.relu(next(conv)(la))
        apa = self._pool(lb)
        for _ in range(coarse):
            apb = F.relu(next(conv)(apa))
            apa = F.relu(next(conv)(apb)) + apa
        up = F.interpolate(apa, scale_factor=2, mode="nearest")
        upa = up[(slice(None), slice(None)) + tuple(slice(0, n) for n in lb.shape[2:])] + lb
        for _ in range(post):
            upb = F.relu(next(conv)(upa))
            upa = F.relu(next(conv)(upb)) + upa
        return self.dense(upa)


class DCDMNet(nn.Module):
    """quadrun's first version ("resnet"): linear first conv, residual blocks, one pool
    level, skip, 1x1 out, rescaled input."""

    def __init__(self, dim: int = 2, width: int = 16, blocks: int = 2):
        super().__init__()
        self.dim = dim
        self.first = _conv(dim, 1, width)            # linear: no activation
        self.fine_in = _blocks(dim, width, blocks)
        self.coarse = _blocks(dim, width, blocks + 1)
        self.fine_out = _blocks(dim, width, blocks)
        self.last = _conv(dim, width, 1, k=1)        # per-cell 16 -> 1

    def forward(self, r):
        h = self.fine_in(self.first(rescale(r)))
        c = self.coarse(_pool(h)) if min(h.shape[2:]) >= 2 else h
        h = self.fine_out(h + _up(c, h))
        return self.last(h)


class MultilevelDCDMNet(nn.Module):
    """V-cycle with weights shared across levels; depth = log2(n / coarsest)."""

    def __init__(self, dim: int = 2, width: int = 16, blocks: int = 1, coarsest: int = 8,
                 max_levels: int = 0):
        super().__init__()
        self.dim, self.coarsest, self.max_levels = dim, coarsest, max_levels
        self.first = _conv(dim, 1, width)
        self.down = _blocks(dim, width, blocks)      # before pooling, at every level
        self.bottom = _blocks(dim, width, blocks + 1)
        self.up = _blocks(dim, width, blocks)        # after adding the coarse correction
        self.gain = nn.Parameter(torch.ones(()))     # coarse correction scale, per level
        self.last = _conv(dim, width, 1, k=1)

    def levels(self, n: int) -> int:
        """Pooling levels used on an n-cell-wide grid."""
        count = 0
        while n > self.coarsest and n % 2 == 0 and (not self.max_levels or count < self.max_levels):
            n //= 2
            count += 1
        return count

    def _cycle(self, h, depth: int):
        if depth == 0:
            return self.bottom(h)
        h = self.down(h)
        c = self._cycle(_pool(h), depth - 1)
        return self.up(h + self.gain * _up(c, h))

    def forward(self, r):
        h = self.first(rescale(r))
        return self.last(self._cycle(h, self.levels(min(r.shape[2:]))))


class AdditiveDCDMNet(nn.Module):
    """A learned additive multilevel (BPX-like) preconditioner, symmetric positive
    semi-definite by construction:

        f(r) = sum_k g^k P^k L R^k s(r),    L = K^T K,    R = P^T / 2^d,

    K: a small stack of linear 3^d convolutions (no biases) shared by every level; K^T: its
    adjoint (transposed convolutions with the same weights); P: bilinear (trilinear) 2x
    interpolation; R: its adjoint scaled to average (full weighting); k = 0 .. levels, the
    grid halved until `coarsest` cells across; g: a learned gain (about 4 for the Poisson
    stencil: halving the grid makes its smooth modes' inverse 4x larger); s(r) = rescale(r),
    a positive scalar per sample. Coarser levels handle smoother parts of the residual; a
    grid twice as wide adds one level of the same form, so what is learned at n carries to
    2n. As a fixed SPD operator it makes DCDM a preconditioned CG, which cannot stall on a
    scene unlike the training one (the nonlinear multilevel nets can: their directions may
    be nearly orthogonal to the residual on obstacle scenes at an unseen depth)."""

    def __init__(self, dim: int = 2, width: int = 16, blocks: int = 2, coarsest: int = 4):
        super().__init__()
        self.dim, self.coarsest, self.max_levels = dim, coarsest, 0
        shape = (3,) * dim
        chans = [1] + [width] * blocks
        self.kernels = nn.ParameterList(
            nn.Parameter(torch.randn(cout, cin, *shape) / (3 ** dim * cin) ** 0.5)
            for cin, cout in zip(chans[:-1], chans[1:]))
        self.log_gain = nn.Parameter(torch.tensor(4.0).log())
        # the 1-D interpolation weights, kept on the model's device (no host copy per call,
        # so a forward can be captured as a CUDA graph); not part of the state dict
        self.register_buffer("interp", torch.tensor([0.25, 0.75, 0.75, 0.25]), persistent=False)

    levels = MultilevelDCDMNet.levels

    def _local(self, x):
        """L x = K^T K x."""
        conv, adj = (F.conv2d, F.conv_transpose2d) if x.dim() == 4 else \
            (F.conv3d, F.conv_transpose3d)
        for w in self.kernels:
            x = conv(x, w, padding=1)
        for w in reversed(self.kernels):
            x = adj(x, w, padding=1)
        return x

    def _stencil(self, x):
        """The bilinear (trilinear) 2x interpolation stencil: outer product of
        (1, 3, 3, 1) / 4 per axis, as a (1, 1, 4, ...) transposed-convolution weight."""
        w1 = self.interp.to(x.dtype)
        w = w1
        for _ in range(x.dim() - 3):
            w = w[..., None] * w1
        return w[None, None]

    def _restrict(self, x):
        """P^T x / 2^d: the adjoint of the interpolation, scaled to average."""
        conv = F.conv2d if x.dim() == 4 else F.conv3d
        return conv(x, self._stencil(x), stride=2, padding=1) / 2 ** (x.dim() - 2)

    def _prolong(self, x):
        """P x: bilinear (trilinear) interpolation to the grid twice as wide."""
        adj = F.conv_transpose2d if x.dim() == 4 else F.conv_transpose3d
        return adj(x, self._stencil(x), stride=2, padding=1)

    def linear(self, x):
        """The SPD operator sum_k g^k P^k L R^k x on grids x (batch, 1, n, ...)."""
        xs = [x]
        for _ in range(self.levels(min(x.shape[2:]))):
            xs.append(self._restrict(xs[-1]))
        gain = self.log_gain.exp()
        out = self._local(xs[-1])
        for x in reversed(xs[:-1]):                  # coarse to fine
            out = gain * self._prolong(out) + self._local(x)
        return out

    def forward(self, r):
        return self.linear(rescale(r))


def build(arch: str, dim: int, width: int = 16, blocks: int = 2, coarsest: int = 8,
          max_levels: int = 0) -> nn.Module:
    """The network by name; see ARCHS. max_levels caps the multilevel depth (0: none);
    the authors' nets ("paper", "paper128") have a fixed wiring (`blocks` is not used)."""
    if arch in PAPER_DEPTHS:
        return PaperNet(dim, width, *PAPER_DEPTHS[arch])
    if arch == "resnet":
        return DCDMNet(dim, width, blocks)
    if arch == "multilevel":
        return MultilevelDCDMNet(dim, width, blocks, coarsest, max_levels)
    if arch == "additive":
        return AdditiveDCDMNet(dim, width, blocks, coarsest)
    raise ValueError(f"unknown arch {arch!r}; must be one of: {', '.join(ARCHS)}")


def scale_invariant_loss(q: torch.Tensor, b: torch.Tensor, A) -> torch.Tensor:
    """mean_i ||b_i - (q_i.b_i / q_i.A q_i) A q_i||^2 for rows q, b of shape (batch, n),
    with A a sparse (n, n) matrix. Unchanged when any q_i is multiplied by a nonzero c."""
    Aq = (A @ q.T).T
    step = (q * b).sum(1, keepdim=True) / (q * Aq).sum(1, keepdim=True)
    return ((b - step * Aq) ** 2).sum(1).mean()

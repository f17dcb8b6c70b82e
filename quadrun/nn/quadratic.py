"""Quadratic neurons (Fan et al.): dense and 2-D conv layers, full and compact forms.

    full:     (W_r x + b_r) * (W_g x + b_g) + W_b (x*x) + c
    compact:   W_r x + b_r                  + W_b (x*x) + c

r and g are computed by one matmul/conv with their weights concatenated, then split.
Every parameter carries its role: ``linear`` (W_r, b_r), ``quad_g`` (W_g, b_g) or ``quad_b``
(W_b, c). Optimisers group parameters by role (`param_groups`), never by name.

Initialisation ``relinear`` (W_g = 0, b_g = 1, W_b = 0, c = 0, W_r Kaiming): the layer
starts as the conventional layer with weights W_r, b_r. ``random``: every part random.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

ROLES = ("linear", "quad_g", "quad_b")
FORMS = ("full", "compact")
INITS = ("relinear", "random")


def roles(model: nn.Module) -> list:
    """[(parameter, role)] for every parameter of `model`, found by module type and the
    part each parameter plays in it; parameters outside quadratic layers are ``linear``."""
    out, seen = [], set()
    for module in model.modules():
        for attr, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            role = module.ROLE_OF[attr] if isinstance(module, _Quadratic) else "linear"
            out.append((p, role))
    return out


class _Quadratic(nn.Module):
    """Shared parameter set-up of the dense and conv forms. `shape` is the weight shape
    for one part: (out, in) or (out, in, k, k)."""

    ROLE_OF = {"weight_r": "linear", "bias_r": "linear", "weight_g": "quad_g",
               "bias_g": "quad_g", "weight_b": "quad_b", "bias_b": "quad_b"}

    def __init__(self, shape: tuple, bias: bool, form: str, init: str):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.form, self.init_mode = form, init
        out = shape[0]
        self.weight_r = nn.Parameter(torch.empty(shape))
        self.bias_r = nn.Parameter(torch.empty(out)) if bias else None
        if form == "full":
            self.weight_g = nn.Parameter(torch.empty(shape))
            self.bias_g = nn.Parameter(torch.empty(out))
        else:
            self.register_parameter("weight_g", None)
            self.register_parameter("bias_g", None)
        self.weight_b = nn.Parameter(torch.empty(shape))
        self.bias_b = nn.Parameter(torch.empty(out)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = math.prod(self.weight_r.shape[1:])
        bound = 1 / math.sqrt(fan_in)
        if self.init_mode == "relinear":
            nn.init.kaiming_normal_(self.weight_r, nonlinearity="relu")
            if self.bias_r is not None:
                nn.init.zeros_(self.bias_r)
            if self.weight_g is not None:
                nn.init.zeros_(self.weight_g)
                nn.init.ones_(self.bias_g)
            nn.init.zeros_(self.weight_b)
            if self.bias_b is not None:
                nn.init.zeros_(self.bias_b)
            return
        for w in (self.weight_r, self.weight_g, self.weight_b):
            if w is not None:
                nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # torch's default for Linear/Conv
        for b in (self.bias_r, self.bias_g, self.bias_b):
            if b is not None:
                nn.init.uniform_(b, -bound, bound)

    def _rg_params(self):
        """Concatenated weight and bias of the r and g parts (one matmul/conv)."""
        if self.weight_g is None:
            return self.weight_r, self.bias_r
        w = torch.cat([self.weight_r, self.weight_g], 0)
        b_r = self.bias_r if self.bias_r is not None else torch.zeros_like(self.bias_g)
        return w, torch.cat([b_r, self.bias_g], 0)

    def _combine(self, rg: torch.Tensor, quad: torch.Tensor) -> torch.Tensor:
        if self.weight_g is None:
            return rg + quad
        r, g = rg.chunk(2, dim=1)
        return r * g + quad


class QuadraticLinear(_Quadratic):
    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 form: str = "full", init: str = "relinear"):
        self.in_features, self.out_features = in_features, out_features
        super().__init__((out_features, in_features), bias, form, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self._rg_params()
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        out = self._combine(F.linear(x2, w, b), F.linear(x2 * x2, self.weight_b, self.bias_b))
        return out.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, form={self.form}"


class QuadraticConv2d(_Quadratic):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True, form: str = "full",
                 init: str = "relinear"):
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        super().__init__((out_channels, in_channels, kernel_size, kernel_size), bias, form, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self._rg_params()
        rg = F.conv2d(x, w, b, self.stride, self.padding)
        quad = F.conv2d(x * x, self.weight_b, self.bias_b, self.stride, self.padding)
        return self._combine(rg, quad)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, form={self.form}")


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 role_lr: Optional[dict] = None, role_weight_decay: Optional[dict] = None) -> list:
    """Optimiser parameter groups by role: {"params", "lr", "weight_decay", "name"}.

    `role_lr` / `role_weight_decay` override the base values for ``quad_g`` / ``quad_b``.
    Roles with no parameters are left out."""
    role_lr, role_weight_decay = role_lr or {}, role_weight_decay or {}
    by_role = {r: [] for r in ROLES}
    for p, role in roles(model):
        by_role[role].append(p)
    return [{"params": ps, "name": r, "lr": role_lr.get(r, lr),
             "weight_decay": role_weight_decay.get(r, weight_decay)}
            for r, ps in by_role.items() if ps]


def role_norms(model: nn.Module) -> dict:
    """L2 norm of all weights of each role (the collapse diagnostic of the ReLinear paper)."""
    sq = {r: 0.0 for r in ROLES}
    with torch.no_grad():
        for p, role in roles(model):
            sq[role] += float(p.detach().float().pow(2).sum())
    return {r: math.sqrt(v) for r, v in sq.items()}

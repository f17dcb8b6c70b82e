"""dcdm's evidence: from records to the numbers each claim is decided on (claims.py).
Torch-free.

`collect(records)` -> the classical baselines per (dim, n, scene, solver), each value the
censored median over the seeds a sweep pools (iterations, set-up + solve seconds, the
A-cosine), and the DCDM networks per arch, each with its own values per (n, scene): a
network is one training (arch, dim, train_seed), numbered 0, 1, ... per (arch, dim).
`versus(...)`: DCDM's iterations or time over a baseline's, one case per network and
(n, scene); the other claims' evidence is built in claims.py from the same pieces.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional


from quadrun.claims import Evidence, exact, fmt, missing
from quadrun.experiments.dcdm.config import abs_cosine
from quadrun.stats import censored_median, censored_ratio, median

SIZE_HOLDS, SIZE_FAILS = 1.2, 1.5   # size_independent: its(2n)/its(n) per doubling
UNSEEN_FACTOR = 2.0        # unseen: iterations within this factor of the training scene's
MG_FACTOR = 2.0            # time_vs_mg: DCDM's time within this factor of MG's
TIME_NOISE = 0.1           # a time ratio within 10 % of its bound is undecided
NAMES = {"cg": "CG", "jacobi": "Jacobi", "ic": "IC", "deflated": "deflated PCG", "amg": "AMG",
         "mg": "MG"}
CAPS = "higher iteration caps (dcdm.maxiter, dcdm.dcdm_maxiter) would decide it"


# -- from records -----------------------------------------------------------------------------
def _its(r) -> float:
    its = r.get("iterations")
    ok = r.get("converged") is True and isinstance(its, (int, float)) and math.isfinite(its)
    return float(its) if ok else math.inf


def _time(r) -> float:
    t = [r.get("setup_s"), r.get("solve_s")]
    ok = r.get("converged") is True and all(
        isinstance(x, (int, float)) and math.isfinite(x) for x in t)
    return float(sum(t)) if ok else math.inf


@dataclass
class Data:
    base: dict = field(default_factory=dict)    # (dim, n, scene, solver) -> {its, time, cos}
    nets: dict = field(default_factory=dict)    # arch -> {(dim, index): {(n, scene): values}}
    seeds: int = 0                              # the most records pooled for one baseline
    device: str = "unknown device"
    protocols: tuple = ()


def collect(records) -> Data:
    solves = [r for r in records if r.get("part") == "solve"]
    pooled: dict = {}
    nets: dict = {}
    ids: dict = {}
    for r in solves:
        cos = abs_cosine(r["cosines"]) if isinstance(r.get("cosines"), list) else None
        values = {"its": _its(r), "time": _time(r), "cos": cos,
                  "negative": any(x is not None and x < 0 for x in r.get("cosines") or [])}
        if r["solver"] == "dcdm":
            arch, dim = r.get("arch", "additive"), r["dim"]
            seen = ids.setdefault((arch, dim), {})
            index = seen.setdefault(r.get("train_seed", r.get("net", 0)), len(seen))
            nets.setdefault(arch, {}).setdefault((dim, index), {})[(r["n"], r["scene"])] = values
        else:
            pooled.setdefault((r["dim"], r["n"], r["scene"], r["solver"]), []).append(values)
    base = {k: {"its": censored_median([v["its"] for v in vs]),
                "time": censored_median([v["time"] for v in vs]),
                "cos": median(v["cos"] for v in vs)} for k, vs in pooled.items()}
    devices = sorted({str(r["device"]) for r in solves if r.get("device")})
    return Data(base, nets, max((len(v) for v in pooled.values()), default=0),
                ", ".join(devices) or "unknown device",
                tuple(sorted({r.get("protocol", "quadrun") for r in solves})))


# -- evidence ---------------------------------------------------------------------------------
def case(label: str, value: Optional[float], undecided: str):
    return (label, exact(value) if value is not None else Evidence(undecided=undecided, next=CAPS))


def label(dim, n, scene, index) -> str:
    return f"{dim}D n={n} {scene} net {index}" if n is not None else f"{dim}D {scene} net {index}"


def span(xs, unit="x") -> str:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return f"{fmt(min(xs))}-{fmt(max(xs))}{unit}" if xs else "-"


def _num(x, unit="") -> str:
    return "not converged" if x is None or math.isinf(x) else f"{fmt(x)}{unit}"


def _spread(rows: list, unit: str = "") -> str:
    """The widest range over networks of DCDM's value at one (dim, n, scene)."""
    by: dict = {}
    for key, d in rows:
        by.setdefault(key, []).append(d)
    wide = [(k, v) for k, v in by.items() if len(v) > 1]
    if not wide:
        return ""

    def width(v):
        f = [x for x in v if math.isfinite(x)]
        return math.inf if len(f) < len(v) else max(f) / max(min(f), 1e-300)

    wide = [(k, v) for k, v in wide if any(math.isfinite(x) for x in v) and min(v) != max(v)]
    if not wide:
        return "; the same at every (dim, n, scene) for every net"
    key, v = max(wide, key=lambda kv: width(kv[1]))
    return f"; spread over nets: widest {key}: {_num(min(v), unit)} to {_num(max(v), unit)}"


def _nets(data: Data, arch: str) -> dict:
    return data.nets.get(arch, {})


def nets_text(nets: dict) -> str:
    dims = sorted({d for d, _ in nets})
    return ", ".join(f"{sum(1 for x, _ in nets if x == d)} in {d}-D" for d in dims)


def versus(data: Data, arch: str, solver: str, what: str, largest: bool = False,
            bound: float = 1.0) -> Evidence:
    """DCDM's value (its | time) over the baseline's, per network and (n, scene)."""
    nets = _nets(data, arch)
    top = {}
    for (dim, _), vals in nets.items():
        for n, _ in vals:
            top[dim] = max(n, top.get(dim, n))
    cases, rows, values, worst = [], [], {}, None
    for (dim, index), vals in sorted(nets.items()):
        for (n, scene), v in sorted(vals.items()):
            ref = data.base.get((dim, n, scene, solver))
            if ref is None or (largest and n != top[dim]):
                continue
            d, g = v[what], ref[what]
            ratio = censored_ratio(d, g)
            key = label(dim, n, scene, index)
            cases.append(case(key, ratio, "neither solve reached the tolerance"))
            rows.append((f"{dim}D n={n} {scene}", d))
            values[key] = {"dcdm": None if math.isinf(d) else d,
                           solver: None if math.isinf(g) else g}
            if ratio is not None and (worst is None or ratio > worst[0]):
                worst = (ratio, key, d, g)
    if not cases:
        return missing(f"needs dcdm and {solver} in dcdm.solvers (and arch {arch} in dcdm.archs)",
                       f"no DCDM ({arch}) and {solver} solves of one scene")
    unit = " s" if what == "time" else ""
    below = sum(1 for _, ev in cases if ev.interval is not None and ev.interval.estimate < bound)
    ratios = [e.interval.estimate for _, e in cases if e.interval is not None]
    name = NAMES.get(solver, solver)
    where = "scene at the largest n" if largest else "n, scene"
    text = (f"{arch} nets ({nets_text(nets)}): below {fmt(bound)}x {name}'s on "
            f"{below}/{len(cases)} (net, {where}); DCDM/{name} {span(ratios)}")
    if worst:
        text += f"; worst {worst[1]}: DCDM {_num(worst[2], unit)} vs {name} {_num(worst[3], unit)}"
    text += _spread(rows, unit) + pooled(data, time=what == "time")
    return Evidence(measured=text, values=values, cases=cases, next=CAPS if what == "its" else
                    "repeated timings on an unloaded device would decide them")


def pooled(data: Data, time: bool = False) -> str:
    out = f"; baselines: median over {data.seeds} seeds" if data.seeds > 1 else ""
    if data.protocols and data.protocols != ("quadrun",):
        out += f"; protocol {'+'.join(data.protocols)}"
    return out + (f"; set-up + solve on {data.device}" if time else "")


def doublings(vals: dict, scene: str, key: str = "its") -> list:
    """[(n, its(2n)/its(n) or None when n did not converge)] along the sizes of a scene."""
    sizes = sorted(n for n, s in vals if s == scene)
    out = []
    for n in sizes:
        if 2 * n in sizes:
            a, b = vals[(n, scene)][key], vals[(2 * n, scene)][key]
            out.append((n, None if math.isinf(a) else b / a))
    return out


def chain_value(ratios: list) -> Optional[float]:
    """A scene's size growth: the largest ratio per doubling (None: undecided)."""
    known = [r for r in ratios if r is not None]
    if any(r > SIZE_FAILS for r in known):
        return max(known)
    return None if len(known) < len(ratios) else max(known)

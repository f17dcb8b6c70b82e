"""pde's one rule of its own: geometric decay of an energy gap (torch-free).

The shared rules (quadrun.claims) read intervals; this one reads the numbers of
`reference.gap_fit`: a fitted factor, the R^2 of log gap against the step and against
log(t + 1). It decides one case of pgd_geometric (AllCases over the reference's (phi, d))."""
from __future__ import annotations

from dataclasses import dataclass

from quadrun.claims import FAILS, HOLDS, INCONCLUSIVE, Rule, fmt

# A geometric decay puts log gap on a line in the step (R^2 = 1); an algebraic one, t^-k,
# lies on a line in log(t + 1) instead. R2_MIN is the least R^2 that counts as a line.
R2_MIN = 0.99


@dataclass(frozen=True)
class GeometricDecay(Rule):
    """holds when the fitted per-step factor is < 1 and log gap is a line in the step
    (R^2 >= r2_min), or the gap reaches round-off in fewer than 3 steps; fails on a
    non-finite gap, no fall, a factor >= 1, or a power law in t fitting better than the
    line; else inconclusive (the rate changes along the run)."""
    r2_min: float = R2_MIN

    def _decide(self, ev):
        v = ev.values
        if not v["finite"]:
            return FAILS, "an energy gap is not finite (the iteration blew up)"
        if not v["falls"]:
            return FAILS, f"the gap does not fall ({fmt(v['first'])} at step 0, {fmt(v['last'])} at the end)"
        if v["r2"] is None:      # round-off within 3 steps: rate is a bound
            return HOLDS, (f"the gap reaches round-off after {v['steps_fitted']} step(s): a "
                           f"per-step factor at most {fmt(v['rate'])}, faster than a fit can resolve")
        if v["rate"] >= 1:
            return FAILS, f"the gap does not fall: fitted factor {fmt(v['rate'])} >= 1"
        if v["r2"] >= self.r2_min:
            return HOLDS, (f"the gap falls by {fmt(v['rate'])} per step, log gap linear in the "
                           f"step (R^2 {v['r2']:.4f})")
        if v["r2_power"] > v["r2"]:
            return FAILS, (f"the gap falls, but log gap is closer to a power law in t (R^2 "
                           f"{v['r2_power']:.3f}) than to a line (R^2 {v['r2']:.3f}): "
                           "sublinear, not geometric")
        return INCONCLUSIVE, (f"the gap falls but its log is not close to linear in the step "
                              f"(R^2 {v['r2']:.3f} < {self.r2_min}): the rate changes along the run")

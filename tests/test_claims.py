"""The claims layer: each rule holds, fails and is undecided on constructed evidence, and
the rules that rest on noise have their error rates simulated where the truth is known."""
from __future__ import annotations

import numpy as np
import pytest

from quadrun.claims import (Above, AllCases, Band, Below, Claim, Evidence, FewerEvents,
                            decide, fmt_interval, missing)
from quadrun.stats import Interval, detectable_difference, welch_interval


def verdict(rule, **evidence) -> str:
    return rule.decide(Evidence(**evidence))[0]


def test_above_and_below():
    assert verdict(Above(0), interval=Interval(0.3, 0.1, 0.5)) == "holds"
    assert verdict(Above(0), interval=Interval(-0.3, -0.5, -0.1)) == "fails"
    assert verdict(Above(0), interval=Interval(0.0, -0.1, 0.1)) == "inconclusive"
    assert verdict(Above(0), interval=Interval(0.3)) == "inconclusive"      # no interval
    assert verdict(Above(1.0), interval=Interval(2, 2, 2)) == "holds"       # an exact number
    assert verdict(Below(1.0), interval=Interval(0.5, 0.2, 0.9)) == "holds"
    assert verdict(Below(1.0), interval=Interval(2, 1.5, 2.5)) == "fails"
    assert verdict(Below(1.0), interval=Interval(1, 0.5, 1.5)) == "inconclusive"


def test_band_with_a_pre_asymptotic_side():
    rate = Band(1.5, 2.5, below="inconclusive", below_why="pre-asymptotic")
    assert verdict(rate, interval=Interval(2.0, 1.8, 2.3)) == "holds"
    assert verdict(rate, interval=Interval(3.0, 2.7, 3.3)) == "fails"
    v, why = rate.decide(Evidence(interval=Interval(1.1, 0.64, 1.35)))
    assert v == "inconclusive" and "pre-asymptotic" in why
    v, why = rate.decide(Evidence(interval=Interval(1.7, 0.77, 2.59)))     # too wide
    assert v == "inconclusive" and "too wide" in why
    v, why = rate.decide(Evidence(interval=Interval(1.5, 1.27, 1.65)))     # across an edge
    assert v == "inconclusive" and why == "the interval [1.27, 1.65] crosses the edge 1.5 of [1.5, 2.5]"


def test_all_cases():
    rule = AllCases(Above(0))
    ok, bad, open_ = (Evidence(interval=Interval(1, 0.5, 1.5)), Evidence(interval=Interval(-1, -2, -0.5)),
                      Evidence(interval=Interval(0, -1, 1)))
    assert verdict(rule, cases=[("a", ok), ("b", ok)]) == "holds"
    assert verdict(rule, cases=[("a", ok), ("b", bad), ("c", open_)]) == "fails"
    assert verdict(rule, cases=[("a", ok), ("c", open_)]) == "inconclusive"
    assert verdict(rule, cases=[("a", missing("no runs"))]) == "not_measured"
    assert verdict(rule, cases=[]) == "not_measured"


def test_fewer_events():
    rule = FewerEvents(what="collapses", reference="plain")
    assert verdict(rule, counts=(0, 15, 7, 15)) == "holds"
    assert verdict(rule, counts=(9, 15, 1, 15)) == "fails"
    assert verdict(rule, counts=(2, 15, 3, 15)) == "inconclusive"
    v, why = rule.decide(Evidence(counts=(0, 5, 0, 5)))
    assert v == "inconclusive" and "none to prevent" in why
    assert verdict(FewerEvents(more=True), counts=(9, 15, 1, 15)) == "holds"
    assert verdict(rule, counts=(0, 0, 3, 5)) == "not_measured"


def test_claim_decides_and_writes_the_why_and_next():
    c = Claim("x.y", "A is better than B.", "paper", target="interval above 0", rule=Above(0),
              setup="digits (ours)")
    out = c.decide(Evidence(measured="diff 0.1", interval=Interval(0.1, -0.2, 0.4),
                            next="15 seeds per arm would decide it"))
    assert out["verdict"] == "inconclusive" and out["why"].endswith("15 seeds per arm would decide it")
    assert out["measured"] == "diff 0.1 [setup: digits (ours)]" and out["setup"] == "digits (ours)"
    assert c.decide(None)["verdict"] == "not_measured"
    assert c.decide(missing("run the sweep"))["why"] == "run the sweep"
    assert c.decide(Evidence(undecided="one seed"))["verdict"] == "inconclusive"


def test_decide_rejects_duplicate_ids_and_stray_evidence():
    c = Claim("a", "s", "src", target="t", rule=Above(0))
    with pytest.raises(ValueError, match="declared twice"):
        decide([c, c], {})
    with pytest.raises(ValueError, match="undeclared"):
        decide([c], {"b": Evidence()})
    assert [d["verdict"] for d in decide([c], {})] == ["not_measured"]


def test_fmt_interval():
    assert fmt_interval(1.234, 1.0, 1.5) == "1.23 [1, 1.5]"
    assert fmt_interval(Interval(1.234)) == "1.23 (no interval)"


# -- error rates, simulated where the truth is known ---------------------------------------------
def _welch_above(true_diff: float, sd: float, n: int, trials: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {"holds": 0, "fails": 0, "inconclusive": 0}
    for _ in range(trials):
        iv = welch_interval(rng.normal(true_diff, sd, n), rng.normal(0.0, sd, n))
        out[verdict(Above(0), interval=iv)] += 1
    return {k: v / trials for k, v in out.items()}


def test_welch_above_error_rates():
    null = _welch_above(0.0, 2.0, 15, 2000, 0)        # no difference: says holds ~2.5 %
    assert null["holds"] < 0.045 and null["fails"] < 0.045
    mdd = detectable_difference(3.0, 15, 3.0, 15)    # the difference it is built to detect
    real = _welch_above(mdd, 3.0, 15, 1000, 1)        # ... holds with 80 % power
    assert 0.74 < real["holds"] < 0.87 and real["fails"] == 0.0


def test_fewer_events_error_rates():
    rng = np.random.default_rng(2)
    trials, same, power = 2000, 0, 0
    for _ in range(trials):                            # equal rates 0.3: holds at most 5 %
        same += verdict(FewerEvents(), counts=(rng.binomial(15, 0.3), 15, rng.binomial(15, 0.3), 15)) == "holds"
        power += verdict(FewerEvents(), counts=(rng.binomial(15, 0.0), 15, rng.binomial(15, 0.5), 15)) == "holds"
    assert same / trials < 0.05
    assert power / trials > 0.8                         # 0 % vs 50 % at 15 a side


def test_an_undecided_claim_carries_the_command_that_would_decide_it():
    from quadrun.claims import seeds_command

    command, jobs = seeds_command(15, 5, arms=2)
    c = Claim("a", "s", "src", target="t", rule=Above(0))
    out = c.decide(Evidence(interval=Interval(0, -1, 1), command=command, jobs=jobs))
    assert out["next"] == {"command": "quadrun resume={folder} 'seed=range(0,15)'", "jobs": 20}
    assert c.decide(Evidence(interval=Interval(1, 0.5, 2), command=command))["next"] is None
    assert c.decide(missing("run the sweep", command="quadrun -m x", jobs=3))["next"] == \
        {"command": "quadrun -m x", "jobs": 3}


def test_exact_numbers_against_two_bounds():
    from quadrun.claims import Exact, exact

    rule = Exact(1.2, 1.5, unit="x per doubling")
    assert rule.decide(exact(1.1))[0] == "holds" and rule.decide(exact(1.2))[0] == "holds"
    assert rule.decide(exact(1.8))[0] == "fails"           # a CG-like growth
    assert rule.decide(exact(1.35))[0] == "inconclusive"
    assert rule.decide(exact(float("inf")))[0] == "fails"  # never reached
    strict = Exact(1.0, strict=True)
    assert strict.decide(exact(0.9))[0] == "holds" and strict.decide(exact(1.0))[0] == "fails"

"""dcdm's claims (Kaneda et al. 2023), declared once per evaluated arch, and the evidence
for them from records. Torch-free.

Every claim is decided for each arch on its own (ids `<claim>.<arch>`: the verdicts on
quadrun's additive net are not verdicts on the authors' net) and for each network: a
claim holds only if it holds for each of the arch's networks (`nets` training seeds per
dim, and the networks of every seed a sweep pools), on every case. An iteration count is
deterministic given the seed, so its cases carry no interval: each is an exact number
decided against its bounds (`Exact`), a solve that did not reach the tolerance counting as
+inf. The classical baselines of the seeds a sweep pools are combined by their median
(censored the same way). A timing within TIME_NOISE of its bound is undecided.
"""
from __future__ import annotations

import math

from quadrun.claims import AllCases, Claim, Evidence, Exact, decide, fmt, missing
from quadrun.experiments.dcdm.evidence import (CAPS, MG_FACTOR, SIZE_FAILS, SIZE_HOLDS,
                                               TIME_NOISE, UNSEEN_FACTOR, Data, case,
                                               chain_value, collect, doublings, label,
                                               nets_text, pooled, span, versus)
from quadrun.stats import censored_ratio

SOURCE = "Kaneda et al. 2023 (ICML), abstract"
RESULTS = "Kaneda et al. 2023 (ICML), results (baselines: CG, IC PCG, deflated PCG)"
ARCH_TEXT = {"additive": "quadrun's learned SPD multilevel net, not the authors'",
             "paper": "the authors' N=64 network", "paper128": "the authors' N=128 network",
             "resnet": "quadrun's first paper-shaped net", "multilevel": "quadrun's "
             "weight-shared V-cycle net"}
BASELINES = {"cg": "CG", "ic": "incomplete-Cholesky PCG (IC(0))", "deflated": "deflated PCG"}
TIME = Exact(1 - TIME_NOISE, 1 + TIME_NOISE, strict=True, unit="x its time")


def setup(c, arch: str) -> str:
    """The choices a claim on `arch` rests on that are ours, not the paper's."""
    sizes = ", ".join(f"{c.train_n[i]}^{d}" for i, d in enumerate(c.dims))
    authors = ("; baselines as the authors' test script ran them (CG, deflated PCG to an "
               "absolute tol)" if c.protocol == "authors" else "")
    return (f"arch {arch} ({ARCH_TEXT.get(arch, arch)}); {c.nets} nets per dim, trained on "
            f"{c.train_scene} at {sizes} ({c.train.epochs} epochs of {list(c.samples)} Ritz "
            f"samples, m = {list(c.ritz_m)}, Adam lr {fmt(c.train.lr)}); every solver to "
            f"{fmt(c.tol)} relative{authors}; DCDM cap {c.dcdm_maxiter} iterations")


def declared(c, arch: str, device: str) -> list:
    """The claims on one arch (their ids end in .<arch>)."""
    s, dev = setup(c, arch), f"on this run's device ({device})"
    each = "for each network"
    out = [
        Claim(f"size_independent.{arch}", "DCDM reduces the residual to the tolerance in a "
              "number of iterations independent of the problem size.", SOURCE,
              target=f"DCDM's its(2n)/its(n) <= {fmt(SIZE_HOLDS)} at each of two doublings "
                     f"(n, 2n, 4n) on every evaluated scene, {each}; above {fmt(SIZE_FAILS)} "
                     "on some scene: fails; between: inconclusive",
              rule=AllCases(Exact(SIZE_HOLDS, SIZE_FAILS, unit="x per doubling")), setup=s),
        Claim(f"grows_less_than_cg.{arch}", "A weaker reading of the paper's size "
              "independence: DCDM's iteration count grows less than CG's with the problem "
              "size.", SOURCE, target=f"DCDM's its(2n)/its(n) below CG's at every doubling "
              f"on every evaluated scene, {each}",
              rule=AllCases(Exact(1.0, strict=True, unit="x CG's growth")), setup=s,
              extension=True)]
    for solver, name in BASELINES.items():
        out.append(Claim(
            f"fewer_than_{solver}.{arch}", "DCDM reduces the residual to the tolerance in "
            f"fewer iterations than {name}.", RESULTS,
            target=f"DCDM's iterations to tol below {name}'s on every evaluated (dim, n, "
                   f"scene), {each}", rule=AllCases(Exact(1.0, strict=True, unit="x its count")),
            setup=s))
    out.append(Claim(
        f"unseen.{arch}", "DCDM generalises to systems not seen in training.", SOURCE,
        target=f"DCDM's iterations on every unseen scene <= {fmt(UNSEEN_FACTOR)}x those of "
               f"the same network on the training scene ({c.train_scene}) at the same dim "
               "and n; undecided where it did not converge on the training scene",
        rule=AllCases(Exact(UNSEEN_FACTOR, unit="x the training scene's")), setup=s))
    for solver, name in BASELINES.items():
        out.append(Claim(
            f"time_vs_{solver}.{arch}", f"DCDM reaches the tolerance in less wall time than "
            f"{name}.", RESULTS, target=f"DCDM's set-up + solve time below {name}'s on every "
            f"scene at the largest n of each dim, {each}, {dev} (within "
            f"{fmt(100 * TIME_NOISE)} % of the bound: undecided)", rule=AllCases(TIME),
            setup=s))
    out += [
        Claim(f"time_vs_mg.{arch}", f"quadrun's extension: DCDM's time to the tolerance is "
              f"within {fmt(MG_FACTOR)}x of geometric-multigrid PCG's (MG), the strongest "
              "classical baseline here (AMG beside it).", "quadrun issue 17",
              target=f"DCDM's set-up + solve time <= {fmt(MG_FACTOR)}x MG's on every scene at "
                     f"the largest n of each dim, {each}, {dev} (within "
                     f"{fmt(100 * TIME_NOISE)} % of the bound: undecided)",
              rule=AllCases(Exact(MG_FACTOR * (1 - TIME_NOISE), MG_FACTOR * (1 + TIME_NOISE),
                                  strict=True, unit="x MG's time")), setup=s, extension=True),
        Claim(f"approx_inverse.{arch}", "The network approximates the action of A^-1 (up to "
              "a constant).", SOURCE,
              target="|A-norm cosine| between f(r) and A^-1 r (median over the scene's test "
                     f"residuals; either sign: DCDM's step takes the constant's sign) above "
                     f"IC(0)'s on every evaluated (dim, n, scene), {each}; Jacobi's, the "
                     "identity's (CG's direction) and MG's beside it",
              rule=AllCases(Exact(0.0, strict=True, unit="(IC's cosine - the net's)")),
              setup=s)]
    return out


def claims(records, c) -> list:
    data = collect(records)
    out = []
    for arch in c.archs:
        out += decide(declared(c, arch, data.device), evidence(data, c, arch))
    return out


def evidence(data: Data, c, arch: str) -> dict:
    ev = {f"size_independent.{arch}": size_independent(data, arch),
          f"grows_less_than_cg.{arch}": grows_less(data, arch),
          f"unseen.{arch}": unseen(data, c, arch),
          f"time_vs_mg.{arch}": versus(data, arch, "mg", "time", largest=True, bound=MG_FACTOR),
          f"approx_inverse.{arch}": approx_inverse(data, arch)}
    for solver in BASELINES:
        ev[f"fewer_than_{solver}.{arch}"] = versus(data, arch, solver, "its")
        ev[f"time_vs_{solver}.{arch}"] = versus(data, arch, solver, "time", largest=True)
    return ev


SIZE_RULE = AllCases(Exact(SIZE_HOLDS, SIZE_FAILS))


def size_independent(data: Data, arch: str) -> Evidence:
    nets = data.nets.get(arch, {})
    cases, values, ratios = [], {}, []
    for (dim, index), vals in sorted(nets.items()):
        for scene in sorted({s for _, s in vals}):
            chain = doublings(vals, scene)
            if len(chain) < 2:
                continue
            key = label(dim, None, scene, index)
            cases.append(case(key, chain_value([r for _, r in chain]),
                              "DCDM did not reach the tolerance at a smaller n"))
            values[key] = {f"{n}->{2 * n}": r for n, r in chain}
            ratios += [r for _, r in chain]
    if not cases:
        return missing("needs three sizes n, 2n, 4n of a scene (dcdm.eval_factors [1, 2, 4] "
                       f"within dcdm.max_n) and arch {arch} in dcdm.archs",
                       "no scene solved by DCDM at n, 2n and 4n")
    dims = sorted({d for d, _ in nets})
    counted = sorted({int(k[0]) for k in values})
    short = [d for d in dims if d not in counted]
    worst = max(cases, key=lambda kv: -1 if kv[1].interval is None else kv[1].interval.estimate)
    text = (f"{arch} nets ({nets_text(nets)}): DCDM its(2n)/its(n) {span(ratios)} per doubling; "
            f"worst {worst[0]}: "
            + ", ".join(f"{k} {fmt(r)}x" if r is not None and math.isfinite(r) else
                        f"{k} {'not converged at 2n' if r is not None else '-'}"
                        for k, r in values[worst[0]].items())
            + "; controls under the same rule: "
            f"{control(data, 'cg')}, {control(data, 'mg')}")
    if short:
        text += f"; {', '.join(f'{d}-D' for d in short)}: fewer than three sizes, not counted"
    return Evidence(measured=text + pooled(data), values=values, cases=cases, next=CAPS)


def control(data: Data, solver: str) -> str:
    """The size rule applied to a classical solver's counts (CG must fail it, MG hold)."""
    vals: dict = {}
    for (dim, n, scene, s), v in data.base.items():
        if s == solver:
            vals.setdefault(dim, {})[(n, scene)] = v
    cases, ratios = [], []
    for dim, per in vals.items():
        for scene in sorted({s for _, s in per}):
            chain = doublings(per, scene)
            if len(chain) >= 2:
                cases.append(case(f"{dim}D {scene}", chain_value([r for _, r in chain]), ""))
                ratios += [r for _, r in chain]
    if not cases:
        return f"{solver} not measured"
    return f"{solver} {span(ratios)} ({SIZE_RULE.decide(Evidence(cases=cases))[0]})"


def grows_less(data: Data, arch: str) -> Evidence:
    nets = data.nets.get(arch, {})
    cg = {}
    for (dim, n, scene, s), v in data.base.items():
        if s == "cg":
            cg.setdefault(dim, {})[(n, scene)] = v
    cases, values = [], {}
    for (dim, index), vals in sorted(nets.items()):
        for scene in sorted({s for _, s in vals}):
            ref = dict(doublings(cg.get(dim, {}), scene))
            for n, gd in doublings(vals, scene):
                if n not in ref:
                    continue
                gc = ref[n]
                key = f"{dim}D {scene} {n}->{2 * n} net {index}"
                ratio = None if gd is None or gc is None else censored_ratio(gd, gc)
                cases.append(case(key, ratio, "a solve at n did not reach the tolerance"))
                values[key] = {"dcdm": gd, "cg": gc}
    if not cases:
        return missing("needs dcdm and cg at sizes n and 2n (dcdm.eval_factors)",
                       "no scene solved at n and 2n by DCDM and CG")
    below = sum(1 for _, e in cases if e.interval is not None and e.interval.estimate < 1)
    return Evidence(
        measured=f"{arch} nets ({nets_text(nets)}): DCDM "
                 f"{span(v['dcdm'] for v in values.values())} vs CG "
                 f"{span(v['cg'] for v in values.values())} per doubling; below CG's on "
                 f"{below}/{len(cases)} (net, scene, doubling){pooled(data)}",
        values=values, cases=cases, next=CAPS)


def unseen(data: Data, c, arch: str) -> Evidence:
    nets = data.nets.get(arch, {})
    cases, values, ratios = [], {}, []
    for (dim, index), vals in sorted(nets.items()):
        for (n, scene), v in sorted(vals.items()):
            base = vals.get((n, c.train_scene))
            if scene == c.train_scene or base is None:
                continue
            key = label(dim, n, scene, index)
            t, s = base["its"], v["its"]
            if math.isinf(t):
                cases.append((key, Evidence(undecided=f"the network did not reach the "
                                            f"tolerance on its training scene ({c.train_scene})",
                                            next="a network that converges on its training "
                                                 "scene (longer training) would decide it")))
            else:
                cases.append(case(key, s / t, ""))
                ratios.append(s / t)
            values[key] = {"unseen": None if math.isinf(s) else s,
                           "training": None if math.isinf(t) else t}
    if not cases:
        return missing(f"needs dcdm with arch {arch}, the training scene ({c.train_scene}) "
                       "and another among dcdm.eval_scenes",
                       "no DCDM solve of the training scene beside an unseen one")
    return Evidence(
        measured=f"{arch} nets ({nets_text(nets)}): unseen/training {span(ratios)} over "
                 f"{len(cases)} (net, n, unseen scene) on {c.train_scene}",
        values=values, cases=cases, next=CAPS)


def approx_inverse(data: Data, arch: str) -> Evidence:
    nets = data.nets.get(arch, {})
    cases, values, mine, negative = [], {}, [], set()
    for (dim, index), vals in sorted(nets.items()):
        for (n, scene), v in sorted(vals.items()):
            ic = data.base.get((dim, n, scene, "ic"), {}).get("cos")
            if (dim, n, scene, "ic") not in data.base:
                continue
            key = label(dim, n, scene, index)
            q = v.get("cos")
            cases.append((key, Evidence(undecided="no cosine of the network or of IC", next="")
                          if q is None or ic is None else case(key, ic - q, "")[1]))
            mine.append(q)
            if v.get("negative"):
                negative.add(f"{dim}-D net {index}")
            where = f"{dim}D n={n} {scene}"
            row = values.setdefault(where, {s: data.base.get((dim, n, scene, s), {}).get("cos")
                                            for s in ("cg", "jacobi", "ic", "mg")})
            row.setdefault(arch, []).append(q)
    if not cases:
        return missing(f"needs dcdm (arch {arch}) and ic in dcdm.solvers",
                       "no cosine of the network beside IC's")
    ref = {s: span((row[s] for row in values.values()), "") for s in ("cg", "jacobi", "ic", "mg")}
    above = sum(1 for _, e in cases if e.interval is not None and e.interval.estimate < 0)
    signs = (f"; a negative constant (f(r) ~ -c A^-1 r) on some scene: "
             f"{', '.join(sorted(negative))}" if negative else "")
    return Evidence(
        measured=f"{arch} nets ({nets_text(nets)}): |A-cosine| with A^-1 r {span(mine, '')} "
                 f"(median over each scene's test residuals) vs IC {ref['ic']}, Jacobi "
                 f"{ref['jacobi']}, identity {ref['cg']}, MG {ref['mg']}; above IC's on "
                 f"{above}/{len(cases)} (net, n, scene){signs}", values=values, cases=cases)


def summarize(records, c) -> dict:
    """Status diverged when a training diverged."""
    if any(r.get("part") == "train" and r.get("status") == "diverged" for r in records):
        return {"status": "diverged"}
    return {}

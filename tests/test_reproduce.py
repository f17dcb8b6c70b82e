"""`quadrun reproduce=<paper>`, the report page every report gets, and `--compare`.

Fast tier: the shipped plans load at every scale and name existing sweeps and experiments;
a toy paper (tests/plugins/toy.py, plans written here) reproduced through the real CLI:
plan, report files, resume without touching finished jobs, bad input; the page; compare.
Slow tier: `quadrun reproduce=all scale=smoke` against tests/expected_verdicts/smoke.json,
and every kind of index.html loaded in headless Chromium (tests/browser.py).
`-m reproduction` (never in CI): `quadrun reproduce=all scale=cpu`, which rewrites
tests/expected_verdicts/cpu.json.
"""
from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from conftest import TESTS, run_cli
from quadrun import plans, reproduce
from quadrun.errors import ConfigError
from quadrun.schema import SCALES

EXPECTED = TESTS / "expected_verdicts"

TOY_PAPER = {"title": "Toy paper", "source": "tests/plugins/toy.py",
             "steps": [{"experiment": "toy", "overrides": ["seed=0,1", "toy.train.epochs=2"]},
                       {"experiment": "toy", "overrides": ["toy.width=4", "toy.train.epochs=2"],
                        "scales": ["smoke"]}]}


def write_plans(folder: Path, **plan_files) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in plan_files.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


@pytest.fixture
def toy_plans(tmp_path, monkeypatch):
    folder = write_plans(tmp_path / "plans", toyp=TOY_PAPER,
                         both={"title": "Both", "papers": ["toyp"]})
    monkeypatch.setenv("QUADRUN_PLANS", str(folder))
    monkeypatch.setenv("QUADRUN_EXPERIMENTS", "toy=plugins.toy")
    return folder


def reproduce_cli(*args, cwd: Path, plans_dir: Path, timeout: float = 600):
    return run_cli(*args, cwd=cwd, toy=True, timeout=timeout,
                   env={"QUADRUN_PLANS": str(plans_dir)})


def job_folders(step: Path) -> list:
    return sorted(p for p in step.iterdir() if (p / "meta.json").exists())


def fingerprint(folder: Path) -> dict:
    """{file: (mtime, size)} of every file under `folder`."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in folder.rglob("*") if p.is_file()}


# -- the shipped plans --------------------------------------------------------------------------
def test_every_shipped_plan_loads_at_its_scales_and_covers_every_experiment():
    from quadrun import registry

    names = plans.plan_names()
    assert "all" in names
    covered = set()
    for name in names:
        plan = plans.load_plan(name)
        assert plan.scales(), name
        for scale in plan.scales():
            assert plan.at(scale)
        covered |= {s.experiment for s in plan.steps}
    assert covered == set(registry.EXPERIMENTS), "an experiment is in no paper's plan"
    every = plans.load_plan("all")
    assert {s.experiment for s in every.steps} == set(registry.EXPERIMENTS)


@pytest.mark.parametrize("scale", SCALES)
def test_the_plan_of_all_counts_each_step_s_jobs_as_its_sweep_does(scale, tmp_path, monkeypatch):
    """The job count of each step is the sweep's own: the product of its parameters' values
    (read here from configs/sweep/, as Hydra's basic sweeper reads them), and that of each
    grid it adds."""
    from quadrun import registry
    from quadrun.cli import config_dir
    from quadrun.schema import register

    monkeypatch.chdir(tmp_path)
    register(registry.load_all())
    plan = plans.load_plan("all")
    for step in plan.at(scale):
        jobs, count, _ = reproduce.list_jobs(step.argv(scale, [], tmp_path / step.name),
                                             tmp_path / step.name)
        expected = 1
        if step.sweep:
            data = yaml.safe_load(Path(config_dir(), "sweep", f"{step.sweep}.yaml").read_text())
            sweeper = (data.get("hydra") or {}).get("sweeper") or {}
            params = sweeper.get("params") or {}
            grids = [] if "hydra.sweeper.grids=[]" in step.overrides else sweeper.get("grids") or []
            expected = 0
            for grid in [{}] + grids:   # the ablation's grids add seeds no other grid has
                product = 1
                for value in {**params, **grid}.values():
                    span = re.fullmatch(r"range\((\d+),\s*(\d+)(?:,\s*(\d+))?\)", str(value).strip())
                    product *= len(range(int(span[1]), int(span[2]), int(span[3] or 1))) if span \
                        else len(re.split(r",(?![^\[]*\])", str(value)))
                expected += product
        assert count == expected == len(set(jobs)), step.name
    assert not list(tmp_path.glob("outputs"))


def test_plan_errors_name_the_file_the_step_and_what_is_allowed(tmp_path, monkeypatch):
    folder = write_plans(
        tmp_path, nosweep={"title": "x", "steps": [{"experiment": "relinear", "sweep": "nosuch"}]},
        noexp={"title": "x", "steps": [{"experiment": "nosuch"}]},
        noscale={"title": "x", "steps": [{"experiment": "pde", "scales": ["huge"]}]},
        badkey={"title": "x", "steps": [{"experiment": "pde", "sweeps": "pde_paper"}]},
        setsexp={"title": "x", "steps": [{"experiment": "pde", "overrides": ["experiment=dcdm"]}]},
        loop={"title": "x", "papers": ["loop"]})
    monkeypatch.setenv("QUADRUN_PLANS", str(folder))
    cases = {"nosweep": "step 1: sweep 'nosuch' is not in configs/sweep/; must be one of: ",
             "noexp": "step 1: experiment 'nosuch' is not registered; must be one of: ",
             "noscale": "step 1: scale 'huge' is not a scale; must be one of: smoke",
             "badkey": "step 1: unknown key 'sweeps'; allowed: experiment, sweep",
             "setsexp": "step 1: overrides may not set experiment",
             "loop": "'loop' includes itself"}
    for name, message in cases.items():
        with pytest.raises(ConfigError) as info:
            plans.load_plan(name)
        assert message in str(info.value), name
        assert f"{name}.yaml" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="reproduce: unknown 'other'; must be one of: badkey"):
        plans.load_plan("other")


# -- a toy paper, through the real CLI ------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_reproduction(tmp_path_factory):
    """`quadrun reproduce=toyp scale=smoke` once, in a fresh folder (with its plan there)."""
    root = tmp_path_factory.mktemp("toyrepro")
    folder = write_plans(root / "plans", toyp=TOY_PAPER)
    started = time.time()
    res = reproduce_cli("reproduce=toyp", "scale=smoke", "threads=1", cwd=root, plans_dir=folder)
    return {"root": root, "plans": folder, "res": res, "seconds": time.time() - started,
            "folder": root / "outputs" / "reproduce" / "toyp_smoke"}


def test_a_reproduction_prints_its_plan_runs_every_step_and_writes_one_report(toy_reproduction):
    res, folder = toy_reproduction["res"], toy_reproduction["folder"]
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    plan = out[:out.index("[1] toy-seed=0,1,toy.train.epochs=2:")]
    assert "reproduce=toyp scale=smoke: Toy paper" in plan
    assert re.search(r"\[1\] toy-seed=0,1,toy\.train\.epochs=2\s+2 jobs\s", plan)
    assert re.search(r"\[2\] toy-toy\.train\.epochs=2,toy\.width=4\s+1 job\s", plan)
    assert "total: 3 jobs, 0 done" in plan and "rate: " in plan
    assert "quadrun -m experiment=toy scale=smoke seed=0,1 toy.train.epochs=2 threads=1" in plan
    assert len(job_folders(folder / "toy-seed=0,1,toy.train.epochs=2")) == 2
    assert re.search(r"Coverage: 2 of 2 claims decided \(\d hold, \d fail\)", out)
    report = folder / "report"
    for name in ("index.html", "report.md", "claims.json", "results.csv", "table.md"):
        assert (report / name).exists(), name
    claims = json.loads((report / "claims.json").read_text())
    assert claims["plan"] == "toyp" and claims["scale"] == "smoke"
    assert claims["coverage"]["listed"] == 2 == len(claims["claims"])
    for c in claims["claims"]:
        assert c["experiment"] == "toy" and c["verdict"] in ("holds", "fails")
        assert c["scale"] == "smoke"
        assert c["paper"] == "Toy paper" and c["id"] == "fits" and c["group"]
    record = json.loads((folder / "reproduction.json").read_text())
    launch = record["launches"][-1]
    assert record["command"] == "quadrun reproduce=toyp scale=smoke threads=1"
    assert set(launch["steps"]) == {"toy-seed=0,1,toy.train.epochs=2",
                                    "toy-toy.train.epochs=2,toy.width=4"}
    env = launch["environment"]
    assert env["code"]["commit"] and isinstance(env["code"]["dirty"], bool)
    assert {"jinja2", "torch"} <= {name.lower() for name in env["packages"]}
    md = (report / "report.md").read_text()
    assert md.index("## Claims") < md.index("## toy") < md.index("## Provenance")
    assert re.search(r"\| \*\*(holds|fails)\*\* \(scale=smoke\) \| toy · fits", md)


def test_the_reproduction_page_is_self_contained_claims_first_then_tables_then_provenance(
        toy_reproduction):
    page = (toy_reproduction["folder"] / "report" / "index.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page), "the page fetches something"
    assert "<script" not in page
    rows = re.findall(r'<tr class="claim v-(\w+)" data-verdict="(\w+)"', page)
    claims = json.loads((toy_reproduction["folder"] / "report" / "claims.json").read_text())
    assert rows == [(c["verdict"], c["verdict"]) for c in claims["claims"]]
    assert page.index('id="claims"') < page.index('id="plan"') < page.index('id="exp-toy"') \
        < page.index('id="provenance"')
    assert "scale=smoke: these verdicts check that the code runs" in page
    assert "installed packages" in page and "commit " in page
    assert re.search(r"<li>jinja2 \d", page, re.IGNORECASE)
    assert re.search(r"<td>toy</td><td>3</td>", page)      # seconds per experiment: 3 runs


@pytest.mark.slow
def test_the_same_command_again_continues_and_leaves_finished_jobs_untouched(toy_reproduction):
    root, folder = toy_reproduction["root"], toy_reproduction["folder"]
    steps = [p for p in folder.iterdir() if p.is_dir() and p.name != "report"]
    before = {str(s): fingerprint(s) for s in steps}
    res = reproduce_cli("reproduce=toyp", "scale=smoke", "threads=1", cwd=root,
                        plans_dir=toy_reproduction["plans"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "total: 3 jobs, 3 done; estimated 0.0 s" in res.stdout
    assert res.stdout.count("not launched") == 2
    assert "rate: mean of 2 jobs finished in this reproduction" in res.stdout
    assert {str(s): fingerprint(s) for s in steps} == before
    # a job that did not finish (its summary gone, as after a kill) runs again, alone
    step = folder / "toy-seed=0,1,toy.train.epochs=2"
    killed, kept = job_folders(step)
    (killed / "summary.json").unlink()
    kept_before = fingerprint(kept)
    res = reproduce_cli(f"resume={folder}", cwd=root, plans_dir=toy_reproduction["plans"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 jobs (1 done)" in res.stdout and "1 job to run" in res.stdout
    assert json.loads((killed / "summary.json").read_text())["status"] == "completed"
    assert fingerprint(kept) == kept_before
    assert len(json.loads((folder / "reproduction.json").read_text())["launches"]) == 3


@pytest.mark.parametrize("args, message", [
    (["reproduce=nosuch"], "reproduce: unknown 'nosuch'; must be one of: both, toyp"),
    (["reproduce=toyp", "scale=huge"], "scale: 'huge' is not allowed; must be one of: smoke"),
    (["reproduce=toyp", "experiment=relinear"], "experiment: not allowed with reproduce="),
    (["reproduce=toyp", "scale=smoke", "toy.width=0"], "toy.width: 0 is out of range"),
    (["reproduce=toyp", "scale=smoke", "toy.widht=3"], "toy.widht: unknown key"),
    (["reproduce=toyp", "--cfg", "job"], "arguments: '--cfg' is not an option"),
])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(args, message, tmp_path, toy_plans):
    res = reproduce_cli(*args, cwd=tmp_path, plans_dir=toy_plans)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert not (tmp_path / "outputs").exists()


def test_plan_only_runs_nothing_and_all_joins_the_papers(tmp_path, toy_plans):
    res = reproduce_cli("reproduce=both", "scale=cpu", "--plan", cwd=tmp_path, plans_dir=toy_plans)
    assert res.returncode == 0, res.stderr
    assert "reproduce=both scale=cpu: Both" in res.stdout
    assert "[1] toy-seed=0,1,toy.train.epochs=2" in res.stdout and "[2]" not in res.stdout
    assert "folder: outputs/reproduce/both_cpu" in res.stdout
    assert not (tmp_path / "outputs").exists()


def test_a_folder_of_another_reproduction_is_refused(tmp_path, toy_plans):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "reproduction.json").write_text(json.dumps({"plan": "toyp", "scale": "cpu"}))
    res = reproduce_cli("reproduce=toyp", "scale=smoke", f"hydra.run.dir={folder}", cwd=tmp_path,
                        plans_dir=toy_plans)
    assert res.returncode == 2 and "holds reproduce=toyp scale=cpu" in res.stderr
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    res = reproduce_cli("reproduce=toyp", "scale=smoke", f"hydra.run.dir={tmp_path / 'other'}",
                        cwd=tmp_path, plans_dir=toy_plans)
    assert res.returncode == 2 and "is not a reproduction folder" in res.stderr
    assert (tmp_path / "other" / "x.txt").read_text() == "mine"


# -- the command that would decide a claim --------------------------------------------------------
class _Run:
    def __init__(self, folder, seed, scale, overrides=()):
        self.folder, self.seed, self.overrides = Path(folder), seed, list(overrides)
        self.summary, self.config = {"scale": scale}, {"scale": scale}


class _Study:
    def __init__(self, experiment, runs):
        self.experiment, self.runs = experiment, runs


def test_next_command_is_the_paper_at_the_next_scale_then_more_seeds(tmp_path):
    run = _Run(tmp_path / "a", 0, "smoke")
    study = _Study("relinear", [run])
    quadratic = plans.paper_of("relinear")
    assert plans.next_command({"verdict": "inconclusive"}, study) == \
        f"quadrun reproduce={quadratic} scale=cpu"
    assert plans.next_command({"verdict": "inconclusive", "scale": "cpu"}, study) == \
        f"quadrun reproduce={quadratic} scale=paper"
    assert plans.next_command({"command": "quadrun x=1"}, study) == "quadrun x=1"
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / ".quadrun-sweep.yaml").write_text("{}")
    runs = [_Run(sweep / f"j{i}", i, "paper") for i in range(3)]
    assert plans.next_command({"scale": "paper"}, _Study("relinear", runs)) == \
        f"quadrun resume={sweep} 'seed=range(0,6)'  # more seeds"
    single = _Run(tmp_path / "b", 0, "paper", ["experiment=pde", "scale=paper", "seed=0"])
    assert plans.next_command({}, _Study("pde", [single])).startswith(
        "quadrun -m experiment=pde scale=paper 'seed=range(0,4)'")


# -- every report's page and --compare --------------------------------------------------------
def _toy_run(root: Path, name: str, seed: int, mse: float, width: int = 16) -> Path:
    from plugins import toy

    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(["experiment=toy", f"seed={seed}", "scale=smoke"]))
    (folder / "config.yaml").write_text(yaml.safe_dump(
        {"experiment": "toy", "seed": seed, "scale": "smoke", "toy": {"width": width}}))
    (folder / "meta.json").write_text(json.dumps(
        {"git": "abc1234-dirty", "device": "cpu", "python": "3.11", "torch": "2.13",
         "start": "2026-12-01T10:00:00+00:00", "end": "2026-12-01T10:00:05+00:00", "attempts": 1}))
    record = {"model": "mlp", "status": "completed", "val/mse": mse, "variance": 0.5, "steps": 8}
    (folder / "summary.json").write_text(json.dumps(
        {"experiment": "toy", "status": "completed", "seed": seed, "scale": "smoke",
         "records": [record], "record_keys": ["model"],
         "claims": [{**c, "scale": "smoke"} for c in toy.claims([record], toy.Config())]}))
    return folder


def test_every_report_gets_the_page_a_run_s_with_its_stored_claims(tmp_path, monkeypatch):
    from quadrun import report

    monkeypatch.setenv("QUADRUN_EXPERIMENTS", "toy=plugins.toy")
    run = _toy_run(tmp_path, "run", 0, 0.1)
    result = report.build([run], quiet=True)
    page = (run / "report" / "index.html").read_text()
    assert result["index"] == run / "report" / "index.html"
    assert "<title>quadrun run: toy</title>" in page
    assert page.count('<tr class="claim v-holds" data-verdict="holds"') == 1
    assert "commit <code>abc1234</code> <b>with uncommitted changes (dirty)</b>" in page
    assert "Coverage: 1 of 1 claims decided (1 hold, 0 fail)" in page


def test_an_undecided_claim_shows_the_command_that_would_decide_it(tmp_path, monkeypatch):
    from quadrun import html, report

    monkeypatch.setenv("QUADRUN_EXPERIMENTS", "toy=plugins.toy")
    run = _toy_run(tmp_path, "run", 0, 0.1)
    summary = json.loads((run / "summary.json").read_text())
    summary["claims"][0].update(verdict="inconclusive", why="too few seeds")
    (run / "summary.json").write_text(json.dumps(summary))
    result = report.build([run], quiet=True, page={"command": lambda c, s: "quadrun next=1"})
    page = (run / "report" / "index.html").read_text()
    assert 'to decide: <code>quadrun next=1</code>' in page
    context = html.page(result)
    assert context["coverage"]["inconclusive"] == 1 and context["claims"][0]["command"]


def test_compare_shows_each_verdict_and_each_shared_metric(tmp_path, monkeypatch, capsys):
    from quadrun.report import main

    monkeypatch.setenv("QUADRUN_EXPERIMENTS", "toy=plugins.toy")
    for i, mse in enumerate([0.10, 0.12, 0.17]):
        _toy_run(tmp_path / "A", f"seed={i}", i, mse)
        _toy_run(tmp_path / "B", f"seed={i}", i, mse if i else 0.9)   # one seed worse than Var y
    main(["--compare", str(tmp_path / "A"), str(tmp_path / "B"), "--out", str(tmp_path / "cmp")])
    out = capsys.readouterr().out
    assert re.search(r"toy\s+│ fits \(scale=smoke\)\s+│ holds\s+│ fails\s+│ changed", out), out
    assert "1 of 1 verdicts changed" in out
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    [mse] = [m for m in result["metrics"] if m["metric"] == "val/mse"]
    assert mse["a"] == pytest.approx(0.13) and mse["b"] == pytest.approx((0.9 + 0.12 + 0.17) / 3)
    assert mse["diff"] == pytest.approx(mse["b"] - mse["a"]) and mse["low"] < mse["diff"] < mse["high"]
    assert [m["metric"] for m in result["metrics"]].count("variance") == 1
    assert "| toy | fits | " in (tmp_path / "cmp" / "compare.md").read_text()
    with pytest.raises(SystemExit):
        main(["--compare", str(tmp_path / "A"), str(tmp_path / "nothing")])


# -- slow: the real papers at smoke scale, and the pages in a browser ---------------------------
def verdicts_of(report_folder: Path) -> dict:
    data = json.loads((report_folder / "claims.json").read_text())
    out = {}
    for c in data["claims"]:
        key = f"{c['experiment']}/{c['id']}" + (f" [{c['group']}]" if c.get("group") else "")
        assert key not in out, f"two claims {key}"
        out[key] = c["verdict"]
    return dict(sorted(out.items()))


def expected_file(scale: str, verdicts: dict) -> str:
    return json.dumps({
        "about": f"the verdict of every claim of `quadrun reproduce=all scale={scale}`; "
                 "a change that flips one updates this file on purpose and says why in its "
                 "commit. Regenerate: " + (
                     "QUADRUN_UPDATE_VERDICTS=1 python -m pytest -q -m slow "
                     "tests/test_reproduce.py -k expected_verdicts" if scale == "smoke" else
                     "python -m pytest -q -m reproduction tests/test_reproduce.py"),
        "verdicts": verdicts}, indent=1) + "\n"


def compare_or_write(scale: str, verdicts: dict, write: bool) -> None:
    path = EXPECTED / f"{scale}.json"
    old = json.loads(path.read_text())["verdicts"] if path.exists() else {}
    diff = "\n".join(difflib.unified_diff(
        [f"{k}: {v}" for k, v in old.items()], [f"{k}: {v}" for k, v in verdicts.items()],
        f"expected ({path.name})", "this run", lineterm=""))
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(expected_file(scale, verdicts))
        print(f"\nwrote {path}" + (f"; changes:\n{diff}" if diff else " (no change)"))
        return
    assert verdicts == old, f"verdicts changed at scale={scale}:\n{diff}\n(if on purpose: " \
        "QUADRUN_UPDATE_VERDICTS=1 python -m pytest -q -m slow tests/test_reproduce.py -k " \
        "expected_verdicts, and say why in the commit)"


@pytest.fixture(scope="module")
def smoke_reproduction(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke_all")
    started = time.time()
    res = run_cli("reproduce=all", "scale=smoke", "threads=1", cwd=root, timeout=900)
    seconds = time.time() - started
    print(f"\nquadrun reproduce=all scale=smoke: {seconds:.0f} s (load {os.getloadavg()[0]:.1f})")
    return {"root": root, "res": res, "seconds": seconds,
            "folder": root / "outputs" / "reproduce" / "all_smoke"}


@pytest.mark.slow
def test_expected_verdicts_of_every_claim_at_smoke_scale(smoke_reproduction):
    res = smoke_reproduction["res"]
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    verdicts = verdicts_of(smoke_reproduction["folder"] / "report")
    compare_or_write("smoke", verdicts,
                     os.environ.get("QUADRUN_UPDATE_VERDICTS") == "1")


@pytest.mark.reproduction
@pytest.mark.timeout(6 * 3600)
def test_expected_verdicts_at_cpu_scale_are_rewritten(tmp_path):
    """`python -m pytest -q -m reproduction tests/test_reproduce.py`: hours on a laptop;
    rewrites tests/expected_verdicts/cpu.json and prints what changed."""
    res = run_cli("reproduce=all", "scale=cpu", "threads=1", cwd=tmp_path, timeout=6 * 3600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    folder = tmp_path / "outputs" / "reproduce" / "all_cpu" / "report"
    compare_or_write("cpu", verdicts_of(folder), write=True)


@pytest.mark.slow
def test_every_kind_of_page_loads_in_a_browser(smoke_reproduction, tmp_path):
    """A run's, a sweep's and the reproduction's index.html in headless Chromium at 1280 px:
    no console error, one claims row per claim with its verdict, every image decodes, no
    horizontal scroll; screenshots saved (QUADRUN_SCREENSHOTS=<folder> keeps them)."""
    from browser import Browser, BrowserMissing

    assert smoke_reproduction["res"].returncode == 0, smoke_reproduction["res"].stderr[-3000:]
    folder = smoke_reproduction["folder"]
    sweep = folder / "relinear-relinear_ablation"
    res = run_cli(str(sweep), cwd=smoke_reproduction["root"], script="quadrun.report")
    assert res.returncode == 0, res.stderr[-2000:]
    run = next(p for p in sorted((folder / "expressivity").iterdir()) if (p / "report").is_dir())
    pages = {"run": run / "report", "sweep": sweep / "report", "reproduction": folder / "report"}
    shots = Path(os.environ.get("QUADRUN_SCREENSHOTS") or tmp_path / "screenshots")
    try:
        browser = Browser().__enter__()
    except BrowserMissing as exc:
        pytest.skip(f"headless Chromium cannot start here: {exc}")
    try:
        for kind, report in pages.items():
            page = browser.check((report / "index.html").resolve().as_uri(),
                                 screenshot=shots / f"{kind}.png")
            claims = json.loads((report / "claims.json").read_text())
            claims = claims["claims"] if isinstance(claims, dict) else claims
            assert page["errors"] == [], (kind, page["errors"])
            assert [c["verdict"] for c in page["claims"]] == [c["verdict"] for c in claims], kind
            assert all(c["shown"] == c["verdict"] for c in page["claims"]), kind
            assert page["images"] and all(i["ok"] for i in page["images"]), (kind, page["images"])
            assert page["scroll_width"] <= page["inner_width"] == 1280, (kind, page)
            assert Path(page["screenshot"]).stat().st_size > 10_000
            print(f"\n{kind}: {len(page['claims'])} claims, {len(page['images'])} images, "
                  f"screenshot {page['screenshot']}")
    finally:
        browser.__exit__(None, None, None)


# -- slow: a stop, a failed job ---------------------------------------------------------------
@pytest.mark.slow
def test_a_stopped_reproduction_says_how_to_continue_and_continues(tmp_path):
    import signal
    import subprocess
    import sys

    from conftest import cli_env

    folder = write_plans(tmp_path / "plans", slow={"title": "Slow toy", "steps": [
        {"experiment": "toy", "overrides": ["seed=0,1,2", "toy.sleep=0.05"]}]})
    env = {**cli_env(toy=True), "QUADRUN_PLANS": str(folder)}
    code = "import sys; from quadrun.cli import main; sys.argv[0] = 'quadrun'; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "reproduce=slow", "scale=smoke"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    step = tmp_path / "outputs" / "reproduce" / "slow_smoke" / "toy-seed=0,1,2,toy.sleep=0.05"
    def training() -> list:   # a job that has logged a step and has no summary yet
        return [p for p in step.glob("*") if (p / "metrics.jsonl").exists()
                and not (p / "summary.json").exists()]

    deadline = time.time() + 240
    while time.time() < deadline and not (list(step.glob("*/summary.json")) and training()):
        time.sleep(0.1)
    assert list(step.glob("*/summary.json")) and training(), "no job finished, or none training"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 3, out + err
    assert "interrupted after" in err and \
        "Continue with: quadrun reproduce=slow scale=smoke" in err
    finished = [p for p in step.iterdir() if json.loads(
        (p / "summary.json").read_text() if (p / "summary.json").exists() else "{}"
    ).get("status") == "completed"]
    assert 1 <= len(finished) < 3
    before = {str(p): fingerprint(p) for p in finished}
    res = reproduce_cli("reproduce=slow", "scale=smoke", cwd=tmp_path, plans_dir=folder)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"3 jobs ({len(finished)} done)" in res.stdout
    assert {str(p): fingerprint(p) for p in finished} == before
    assert len(job_folders(step)) == 3


@pytest.mark.slow
def test_a_failed_job_leaves_the_others_and_the_report_and_exits_1(tmp_path):
    folder = write_plans(tmp_path / "plans", failing={"title": "Failing toy", "steps": [
        {"experiment": "toy", "overrides": ["seed=0,1", "toy.fail_at=3", "toy.fail_seed=1"]}]})
    res = reproduce_cli("reproduce=failing", "scale=smoke", cwd=tmp_path, plans_dir=folder)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "quadrun: jobs: 1 completed, 1 failed" in res.stdout
    report = tmp_path / "outputs" / "reproduce" / "failing_smoke" / "report"
    claims = json.loads((report / "claims.json").read_text())
    assert len(claims["claims"]) == 1
    assert "Runs not completed" in (report / "index.html").read_text()


def test_an_override_of_one_experiment_s_section_reaches_only_its_steps():
    step = plans.Step("dcdm", "dcdm", "dcdm_paper")
    argv = step.argv("paper", ["relinear.download=true", "threads=1", "dcdm.maxiter=10"])
    assert argv == ["-m", "experiment=dcdm", "scale=paper", "sweep=dcdm_paper", "threads=1",
                    "dcdm.maxiter=10"]


def test_the_wheel_ships_the_page_templates_the_plans_and_the_rates(tmp_path):
    import subprocess
    import sys
    import zipfile

    repo, source = TESTS.parent, tmp_path / "source"   # a clean copy: no build/ left over
    for part in ("quadrun", "configs", "hydra_plugins"):
        shutil.copytree(repo / part, source / part,
                        ignore=shutil.ignore_patterns("__pycache__", "local"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(repo / part, source / part)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path / "wheel"), str(source)], capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    [wheel] = (tmp_path / "wheel").glob("quadrun-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {f"quadrun/templates/{p.name}" for p in (repo / "quadrun" / "templates").glob("*.j2")}
    wanted |= {f"quadrun/configs/reproduce/{p.name}" for p in (repo / "configs" / "reproduce").iterdir()
               if p.suffix in (".yaml", ".json")}
    assert len(wanted) >= 7 and wanted <= names, sorted(wanted - names)


def _finished(folder: Path, experiment: str, scale: str, seconds: float, overrides=()) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    (folder / "meta.json").write_text(json.dumps({
        "experiment": experiment, "scale": scale, "attempts": 1,
        "start": "2026-12-01T10:00:00+00:00", "end": f"2026-12-01T10:00:{seconds:02.0f}+00:00"}))
    (folder / "summary.json").write_text(json.dumps({"status": "completed"}))
    os.utime(folder / "summary.json", (0, 0))   # older than the end: the end counts
    return folder


def test_the_estimate_says_where_its_rate_comes_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    step = plans.Step("p", "pde", None)
    here = tmp_path / "outputs" / "reproduce" / "p_cpu" / "pde"
    jobs = [here / "scale=cpu,threads=1"]
    reference = {"startup_s": 5, "measured": {"host": "vm", "cores": 2, "date": "2026-12-06"},
                 "rates": {"pde": {"cpu": {"run": {"seconds_per_job": 40.0, "load": 8.0}}}}}
    per_job, startup, source = reproduce.estimate_rate(step, "cpu", jobs, here, 0, reference,
                                                       {"scale=cpu", "threads=1"}, load_now=2.0)
    assert (per_job, startup) == (10.0, 5)     # measured at load 8 on 2 cores: 4x slower
    assert source == ("reference rate in configs/reproduce/rates.json (40 s a job at load 8.0; "
                      "x0.25 for load 2.0 now; on vm, 2 cores, 2026-12-06)")
    reference["rates"]["pde"]["cpu"]["run"] = 40.0          # a bare number: load unknown
    per_job, _, source = reproduce.estimate_rate(step, "cpu", jobs, here, 0, reference,
                                                 {"scale=cpu", "threads=1"}, load_now=2.0)
    assert per_job == 40.0 and "load then unknown, not scaled" in source
    _finished(tmp_path / "outputs" / "pde" / "r1", "pde", "cpu", 20)
    _finished(tmp_path / "outputs" / "pde" / "r2", "pde", "cpu", 30, ["seed=3", "device=cpu"])
    _finished(tmp_path / "outputs" / "pde" / "r3", "pde", "cpu", 50, ["pde.phi=quartic"])  # other study
    _finished(tmp_path / "outputs" / "pde" / "r4", "pde", "smoke", 5)                       # other scale
    per_job, _, source = reproduce.estimate_rate(step, "cpu", jobs, here, 0, reference,
                                                 {"scale=cpu", "threads=1"})
    assert per_job == 25.0 and "mean of 2 earlier runs of pde at scale=cpu under outputs/" in source
    _finished(jobs[0], "pde", "cpu", 12)
    per_job, _, source = reproduce.estimate_rate(step, "cpu", jobs, here, 0, reference,
                                                 {"scale=cpu", "threads=1"})
    assert per_job == 12.0 and "mean of 1 job finished in this reproduction" in source
    prepared = reproduce.Prepared(step, here, [], jobs * 4, 4, 1, per_job, 5.0, source)
    assert prepared.remaining == 3 and prepared.estimate == 5.0 + 3 * 12.0


@pytest.mark.slow
def test_compare_two_real_sweeps_that_differ_in_one_strategy_s_seeds(smoke_reproduction, tmp_path):
    """The relinear ablation of the smoke reproduction against a copy with one strategy cut to
    two seeds: each side's verdicts are its own report's, and `changed` says where they differ."""
    from quadrun import compare
    from quadrun.report import find_runs, studies

    step = next(p for p in smoke_reproduction["folder"].iterdir()
                if p.is_dir() and p.name.startswith("relinear"))
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(step, a, ignore=shutil.ignore_patterns("report"))
    shutil.copytree(step, b, ignore=shutil.ignore_patterns("report"))
    first = sorted(p.name for p in b.iterdir() if (p / "summary.json").exists())[0]
    strategy = re.search(r"relinear\.strategy=[^,]+", first).group(0)
    cut = sorted(p for p in b.iterdir() if p.name.startswith(strategy + ","))[2:]
    assert cut
    for p in cut:
        shutil.rmtree(p)
    result = compare.compare(a, b)

    def verdicts(folder):
        return {c["id"]: c["verdict"] for s in studies(find_runs([folder])) for c in s.claims}

    va, vb = verdicts(a), verdicts(b)
    assert {c["id"]: (c["a"], c["b"]) for c in result["claims"]} == \
        {k: (va[k], vb[k]) for k in va}
    assert all(c["changed"] == (c["a"] != c["b"]) for c in result["claims"])
    print("\n" + "\n".join(f"{c['id']}: {c['a']} -> {c['b']}" for c in result["claims"]))

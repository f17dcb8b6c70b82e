"""quadrun-report on hand-made run folders with known numbers."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from quadrun.report import build, main


def make_run(root: Path, name: str, overrides: list, summary: dict | None, raw: str | None = None):
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / "meta.json").write_text(json.dumps({"end": "2026-11-26T10:00:00"}))
    if raw is not None:
        (folder / "summary.json").write_text(raw)
    elif summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    base = {"experiment": "relinear", "status": "completed", "collapsed": False}
    # group A: accuracies 0.90, 0.92, 0.97 -> mean 0.93, std 0.036055...
    for i, acc in enumerate([0.90, 0.92, 0.97]):
        make_run(root, f"{i}", ["experiment=relinear", "relinear.strategy=a", f"seed={i}"],
                 {**base, "seed": i, "test/acc": acc, "params": 100})
    # group B: one completed (0.5), one diverged, one collapsed, one corrupt, one running
    make_run(root, "3", ["experiment=relinear", "relinear.strategy=b", "seed=0"],
             {**base, "seed": 0, "test/acc": 0.5, "params": 300})
    make_run(root, "4", ["experiment=relinear", "relinear.strategy=b", "seed=1"],
             {**base, "seed": 1, "status": "diverged", "collapsed": True, "test/acc": 0.1,
              "params": 300})
    make_run(root, "5", ["experiment=relinear", "relinear.strategy=b", "seed=2"],
             {**base, "seed": 2, "collapsed": True, "test/acc": 0.1, "params": 300})
    make_run(root, "6", ["experiment=relinear", "relinear.strategy=b", "seed=3"], None,
             raw='{"status": "compl')
    running = make_run(root, "7", ["experiment=relinear", "relinear.strategy=b", "seed=4"], None)
    (running / "meta.json").write_text(json.dumps({"end": None}))
    return root


def test_means_stds_counts_and_tables(sweep):
    result = build([sweep], quiet=True)
    out = sweep / "report"
    [table] = result["tables"]
    rows = {row[0][0]: row for row in table.rows}
    key_a, key_b = "relinear.strategy=a", "relinear.strategy=b"
    _, counts_a, cells_a = rows[key_a]
    assert counts_a == {"n": 3, "completed": 3, "diverged": 0, "collapsed": 0, "failed": 0,
                        "running": 0}
    assert cells_a["test/acc"]["mean"] == pytest.approx(0.93)
    assert cells_a["test/acc"]["std"] == pytest.approx(0.0360555127546)
    _, counts_b, cells_b = rows[key_b]
    assert counts_b == {"n": 5, "completed": 2, "diverged": 1, "collapsed": 2, "failed": 1,
                        "running": 1}
    # completed runs only (the collapsed one included, it finished): (0.5 + 0.1) / 2
    assert cells_b["test/acc"]["mean"] == pytest.approx(0.3)
    assert cells_b["test/acc"]["n"] == 2

    md = (out / "table.md").read_text()
    assert ("| group | n | completed | diverged | collapsed | failed | running | params | test/acc |"
            in md)
    assert "| relinear.strategy=a | 3 | 3 | 0 | 0 | 0 | 0 | 100 ± 0 | 0.93 ± 0.036 |" in md
    assert "| relinear.strategy=b | 5 | 2 | 1 | 2 | 1 | 1 | 300 ± 0 | 0.3 ± 0.28 |" in md
    assert "corrupt summary.json" in md and "/6`: failed" in md and "/7`: running" in md
    tex = (out / "table.tex").read_text()
    assert r"relinear.strategy=a & 3 & 3 & 0 & 0 & 0 & 0 & 100 $\pm$ 0 & 0.93 $\pm$ 0.036 \\" in tex
    assert r"\begin{tabular}{lllllllll}" in tex
    rows_csv = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows_csv) == 8
    assert {r["status"] for r in rows_csv} == {"completed", "diverged", "failed", "running"}
    assert result["figures"] and all(p.exists() for p in result["figures"])


def test_records_are_grouped_by_their_keys(tmp_path):
    root = tmp_path / "s"
    for seed, its in enumerate([(10, 30), (14, 34)]):
        make_run(root, str(seed), ["experiment=dcdm", f"seed={seed}"],
                 {"experiment": "dcdm", "status": "completed", "seed": seed,
                  "solves": [{"solver": "cg", "scene": "box", "dim": 2, "n": 16,
                              "iterations": its[1], "converged": True},
                             {"solver": "dcdm", "scene": "box", "dim": 2, "n": 16,
                              "iterations": its[0], "converged": seed == 0}]})
    result = build([root], quiet=True)
    solves = next(t for t in result["tables"] if t.title == "dcdm: solves")
    cells = {row[0][1]: row[2] for row in solves.rows}
    assert cells["cg"]["iterations"]["mean"] == 32 and cells["dcdm"]["iterations"]["mean"] == 12
    assert cells["dcdm"]["converged"]["mean"] == 0.5


def test_cli_errors_and_empty(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "nope")])
    assert e.value.code == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "empty")])
    assert "no run folders" in capsys.readouterr().err

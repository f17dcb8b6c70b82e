"""quadrun-report on hand-made run folders with known numbers (the toy experiment's claims)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from quadrun.report import Table, build, main, records_table


def make_run(root: Path, name: str, overrides: list, summary: dict | None, raw: str | None = None,
             width: int = 16):
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / "meta.json").write_text(json.dumps({"end": "2026-11-26T10:00:00"}))
    (folder / "config.yaml").write_text(yaml.safe_dump(
        {"experiment": "toy", "seed": 0, "toy": {"width": width}}))
    if raw is not None:
        (folder / "summary.json").write_text(raw)
    elif summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def toy_summary(seed: int, mse: float, status: str = "completed", variance: float = 0.5) -> dict:
    record = {"model": "mlp", "status": status, "val/mse": mse, "steps": 16, "variance": variance}
    from plugins import toy

    return {"experiment": "toy", "status": status, "seed": seed, "records": [record],
            "record_keys": ["model"], "claims": toy.claims([record], toy.Config())}


@pytest.fixture(autouse=True)
def toy_registered(monkeypatch):
    monkeypatch.setenv("QUADRUN_EXPERIMENTS", "toy=plugins.toy")


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    # group width=4: val/mse 0.10, 0.12, 0.17 -> mean 0.13, std 0.0360555...
    for i, mse in enumerate([0.10, 0.12, 0.17]):
        make_run(root, f"{i}", ["experiment=toy", "toy.width=4", f"seed={i}"],
                 toy_summary(i, mse), width=4)
    # group width=8: one completed worse than the variance, one diverged, one interrupted,
    # one with a corrupt summary, one still running
    make_run(root, "3", ["experiment=toy", "toy.width=8", "seed=0"], toy_summary(0, 0.9), width=8)
    make_run(root, "4", ["experiment=toy", "toy.width=8", "seed=1"],
             toy_summary(1, 0.7, status="diverged"), width=8)
    make_run(root, "5", ["experiment=toy", "toy.width=8", "seed=2", "device=cpu"],
             {"experiment": "toy", "status": "interrupted", "seed": 2, "reason": "stopped at step 3"},
             width=8)
    make_run(root, "6", ["experiment=toy", "toy.width=8", "seed=3"], None, raw='{"status": "compl')
    running = make_run(root, "7", ["experiment=toy", "toy.width=8", "seed=4"], None)
    (running / "meta.json").write_text(json.dumps({"end": None}))
    return root


def test_claims_are_decided_per_group_on_pooled_records(sweep):
    result = build([sweep], quiet=True)
    verdicts = {c["group"]: c["verdict"] for c in result["claims"]}
    # toy's claim holds when every finished record's MSE is below the variance 0.5
    assert verdicts == {"toy.width=4": "holds", "toy.width=8": "fails"}
    by_group = {s.group: s for s in result["studies"]}
    assert len(by_group["toy.width=8"].records) == 2       # completed + diverged, pooled
    assert len(by_group["toy.width=4"].records) == 3


def test_record_table_means_counts_and_header(sweep):
    result = build([sweep], quiet=True)
    [table] = result["tables"]
    assert table.columns == ["group", "count", "diverged", "val/mse"]   # steps, model: constant
    assert "model: mlp" in table.header and "steps: 16" in table.header
    rows = {row[0]: row for row in table.rows}
    assert rows["toy.width=4"] == ["toy.width=4", "3", "0", "0.13 ± 0.036"]
    assert rows["toy.width=8"] == ["toy.width=8", "2", "1", "0.8 ± 0.14"]
    [(_, cells_a), (_, cells_b)] = table.data
    assert cells_a["val/mse"]["mean"] == pytest.approx(0.13)
    assert cells_a["val/mse"]["std"] == pytest.approx(0.0360555127546)
    assert cells_b["val/mse"]["n"] == 2


def test_markdown_tex_csv_and_status_line(sweep):
    build([sweep], quiet=True)
    out = sweep / "report"
    md = (out / "table.md").read_text()
    assert md.startswith("8 runs: 4 completed, 1 diverged, 1 failed, 1 interrupted, 1 running")
    assert md.index("### Claims: toy") < md.index("### toy: records")
    assert "| toy.width=4 | 3 | 0 | 0.13 ± 0.036 |" in md
    assert "damaged summary.json" in md and "/5`: interrupted: stopped at step 3" in md
    tex = (out / "table.tex").read_text()
    assert r"toy.width=4 & 3 & 0 & $0.13 \pm 0.036$ \\" in tex
    assert r"\toprule" in tex and r"\begin{tabular}{llp{0.5\linewidth}}" in tex   # verdicts
    assert "mean ± sample standard deviation" in md
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 8                                   # one per record, one per other run
    assert {r["run_status"] for r in rows} == {"completed", "diverged", "failed", "interrupted",
                                               "running"}
    assert sorted(float(r["val/mse"]) for r in rows if r["val/mse"]) == [0.1, 0.12, 0.17, 0.7, 0.9]
    assert json.loads((out / "claims.json").read_text())[0]["experiment"] == "toy"


def test_one_run_is_shown_as_key_value_lines(tmp_path):
    run = make_run(tmp_path, "run", ["experiment=toy"], toy_summary(0, 0.2))
    result = build([run], quiet=True)
    [table] = result["tables"]
    assert table.columns == ["field", "value"]
    assert ["val/mse", "0.2"] in table.rows and ["model", "mlp"] in table.rows
    [c] = result["claims"]
    assert c["verdict"] == "holds" and "group" not in c      # one group: no label


def test_wide_tables_wrap_into_blocks_that_fit():
    columns = ["key"] + [f"metric_{i}" for i in range(12)]
    rows = [["a"] + ["1.234 ± 0.05"] * 12, ["b"] + ["2.5 ± 0.1"] * 12]
    table = Table("t", columns, rows, keys=1)
    blocks = table.blocks(80)
    assert len(blocks) > 1 and all(b[0] == 0 for b in blocks)
    assert sorted({i for b in blocks for i in b}) == list(range(13))
    for b in blocks:
        width = sum(max(len(columns[i]), *(len(r[i]) for r in rows)) + 3 for i in b) + 1
        assert width <= 80


def test_flags_are_counted_and_duplicate_columns_dropped():
    recs = [("", {"k": "a", "ok": True, "x": 1.0, "y": 1.0}), ("", {"k": "a", "ok": False, "x": 3.0, "y": 3.0}),
            ("", {"k": "b", "ok": True, "x": 5.0, "y": 5.0})]
    table = records_table("t", recs, ["k"])
    assert table.columns == ["k", "count", "ok", "x"]             # y duplicates x
    assert "y = x in every row" in table.header
    assert table.rows == [["a", "2", "1/2", "2 ± 1.4"], ["b", "1", "1/1", "5"]]


def test_cli_errors_and_empty(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "nope")])
    assert e.value.code == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "empty")])
    assert "no run folders" in capsys.readouterr().err


def test_a_claim_function_that_raises_leaves_the_tables(tmp_path, monkeypatch):
    from plugins import toy

    def broken(records, c):
        raise KeyError("val/mse")
    for seed in (0, 1):   # two runs of one study: their pooled records are decided again
        make_run(tmp_path, f"run{seed}", ["experiment=toy", f"seed={seed}"], toy_summary(seed, 0.2))
    monkeypatch.setattr(toy, "claims", broken)
    result = build([tmp_path], quiet=True)
    assert result["claims"] == [] and result["tables"]
    assert "### Claims not decided" in (tmp_path / "report" / "table.md").read_text()


def test_one_run_shows_its_stored_claims_and_decides_nothing(tmp_path, monkeypatch):
    from plugins import toy

    run = make_run(tmp_path, "run", ["experiment=toy"], toy_summary(0, 0.2))
    monkeypatch.setattr(toy, "claims", lambda records, c: 1 / 0)
    [c] = build([run], quiet=True)["claims"]
    assert c["id"] == "fits" and c["verdict"] == "holds"


def test_a_run_whose_config_lacks_its_section_is_an_error_not_the_defaults(tmp_path):
    a = make_run(tmp_path, "a", ["experiment=toy", "seed=0"], toy_summary(0, 0.2))
    make_run(tmp_path, "b", ["experiment=toy", "seed=1"], toy_summary(1, 0.2))
    (a / "config.yaml").write_text("experiment: toy\nseed: 0\n")
    result = build([tmp_path], quiet=True)
    assert result["claims"] == []
    assert "no toy section" in (tmp_path / "report" / "table.md").read_text()


def test_claims_line_counts_verdicts_and_applies_holm_across_p_values():
    from quadrun.report import claims_line

    claims = [{"verdict": "holds", "values": {"p": 0.01}}, {"verdict": "holds", "values": {"p": 0.02}},
              {"verdict": "inconclusive", "values": {"p": 0.04}},
              {"verdict": "not_measured", "values": {}}]
    line = claims_line("relinear", claims)
    # Holm over 3: 0.03, 0.04, 0.04 -> both that hold still do
    assert line == ("relinear: 4 claims: 2 hold, 1 inconclusive, 1 not measured; after Holm's "
                    "correction over the 3 with a p-value, 2 of the 2 that hold still hold at 0.05")
    line = claims_line("x", [{"verdict": "holds", "values": {"p": 0.03}},
                             {"verdict": "holds", "values": {"p": 0.04}}, {"verdict": "fails",
                                                                          "values": {"p": 0.5}}])
    assert line.endswith("0 of the 2 that hold still hold at 0.05")     # 0.09, 0.08, 0.5

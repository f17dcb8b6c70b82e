"""Bad values for every key of every experiment, generated from the schemas: each is one
line naming the key, exit status 2, and nothing created (in process, through the CLI's
main; the slow tier runs a sample through the real CLI with a time and memory limit)."""
from __future__ import annotations

import dataclasses
import resource
import subprocess
import sys
import typing

import pytest

from conftest import cli_env
from quadrun import registry
from quadrun.cli import main
from quadrun.schema import BaseConfig


def _fields(cls, prefix: str):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        sub = next((a for a in (typing.get_args(tp) or (tp,)) if dataclasses.is_dataclass(a)), None)
        if sub is not None:
            yield from _fields(sub, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", tp, f.metadata


def _bad_values(tp, meta) -> list:
    """Values that must be refused for a field of type `tp` with range metadata `meta`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    optional = origin is typing.Union and type(None) in args
    base = next((a for a in args if a is not type(None)), tp) if optional else tp
    out = []
    if typing.get_origin(base) in (list, typing.List):
        out += ["[[", "{a: 1}"]
        if meta.get("nonempty"):
            out.append("[]")
        inner = (typing.get_args(base) or (str,))[0]
        for v in _bad_values(inner, meta)[:1]:
            if not v.startswith(("[", "{", "'")):
                out.append(f"[{v}]")
        return out
    if base is bool:
        return ["2", "maybe"]
    if base in (int, float):
        out.append("abc")
        if base is int:
            out.append("1.5")
        for key, delta in (("ge", -1), ("gt", 0), ("le", 1), ("lt", 0)):
            if key in meta:
                edge = meta[key] + delta if base is int else (meta[key] + delta * max(1, abs(meta[key])))
                out.append(str(edge))
        out += ["nan", "inf"]
        return out
    if base is str and meta.get("choices"):
        return ["no_such_choice"]
    return []


def cases() -> list:
    out = []
    experiments = registry.load_all()
    for name, module in sorted(experiments.items()):
        for key, tp, meta in _fields(module.Config, f"{name}."):
            out += [(name, f"{key}={v}") for v in _bad_values(tp, meta)]
    for key, tp, meta in _fields(BaseConfig, ""):
        if key.split(".")[0] in ("experiment", "resume", "data_dir"):
            continue
        out += [("toy_free", f"{key}={v}") for v in _bad_values(tp, meta)]
    out += [("relinear", "relinear.nope=1"), ("dcdm", "pde.d=[1]"), ("pde", "seed=-1"),
            ("hierpoly", "hierpoly.headline.nope=3"), ("expressivity", "expressivity=3")]
    return out


CASES = cases()
FAST = CASES[::3]                                   # the default tier; the slow tier: all
SLOW = [c for i, c in enumerate(CASES) if i % 3]


def test_there_are_at_least_300_cases_over_all_five_experiments():
    assert len(FAST) >= 300
    assert {e for e, _ in FAST} >= set(registry.EXPERIMENTS)


@pytest.mark.parametrize("experiment,override", FAST, ids=[o for _, o in FAST])
def test_a_bad_value_is_one_line_exit_2_nothing_created(experiment, override, tmp_path,
                                                       monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exp = "relinear" if experiment == "toy_free" else experiment
    with pytest.raises(SystemExit) as exit_:
        main([f"experiment={exp}", "scale=smoke", override])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_.value.code == 2, (override, err)
    assert len(lines) == 1 and lines[0].startswith("quadrun: error: "), err
    assert "Traceback" not in err
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("experiment,override", SLOW, ids=[o for _, o in SLOW])
def test_every_other_bad_value_too(experiment, override, tmp_path, monkeypatch, capsys):
    test_a_bad_value_is_one_line_exit_2_nothing_created(experiment, override, tmp_path,
                                                       monkeypatch, capsys)


def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))      # 1 GiB of address space


@pytest.mark.slow
@pytest.mark.parametrize("experiment,override", CASES[::15], ids=[o for _, o in CASES[::15]])
def test_through_the_real_cli_under_30_s_and_a_memory_limit(experiment, override, tmp_path):
    exp = "relinear" if experiment == "toy_free" else experiment
    code = "import sys; from quadrun.cli import main; sys.argv[0] = 'quadrun'; main()"
    r = subprocess.run([sys.executable, "-c", code, f"experiment={exp}", "scale=smoke", override],
                       cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=30,
                       preexec_fn=_limited)
    assert r.returncode == 2, (override, r.stderr[-2000:])
    assert not (tmp_path / "outputs").exists()

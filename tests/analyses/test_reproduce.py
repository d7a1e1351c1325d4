"""The results-table job, ``python -m analyses.reproduce``: a quick synthetic run checked against the library and
the paper's published numbers."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from analyses.model_options import REFERENCE, model_config
from analyses.reproduce import QUICK_RACT, build_parser, fit_factorisation, main
from analyses.results import (
    MODEL_SPECS,
    PUBLISHED,
    PUBLISHED_BASELINES,
    PUBLISHED_GROUPS,
    paired_table,
    parse_models,
    results_table,
)
from analyses.trained import get_trained
from models.baselines import select_ease_lambda
from models.data import load_split
from models.evaluation import USER_GROUPS, Evaluation, evaluate, paired_difference
from models.ract import load_ract

EPOCHS = 3
LAMBDAS = (100.0, 1000.0, 5000.0)
PAPER = Path(__file__).resolve().parents[3] / "shared" / "PAPER.md"
METRICS = ("recall@20", "recall@50", "ndcg@100")


ARGV = ["--quick", "--epochs", str(EPOCHS), "--ease-lambdas", ",".join(map(str, LAMBDAS))]


@pytest.fixture(scope="module")
def quick_run(quick_job):
    """One quick run of every model on synthetic data, with its own run cache (kept for the module's tests)."""
    tables = ["results.csv", "groups.csv", "paired.csv"]
    return quick_job(main, "reproduce", ARGV, tables=tables, json_name="results.json")


def _config(key: str):
    spec = MODEL_SPECS[key]
    pia = 0.1 if spec.pia else 0.0
    return model_config(build_parser().parse_args(ARGV), model=spec.model, rho=0.5, pia=pia, schedule=REFERENCE)


def test_every_file_is_written_and_the_folder_named(quick_run, check_outputs):
    check_outputs(quick_run, ("results",))


def test_every_model_is_in_the_table_with_metrics_in_range(quick_run):
    r = quick_run["results"]
    assert list(r["model"]) == list(MODEL_SPECS)
    for m in METRICS:
        assert r[m].between(0, 1).all() and (r[f"{m}_se"] >= 0).all()
    g = quick_run["groups"]
    for m in METRICS:
        values = g[m].dropna()
        assert values.between(0, 1).all()
    # users in the groups never exceed the evaluated users
    sizes = g.groupby("model")["n"].sum()
    assert (sizes <= r.set_index("model")["n_users"].reindex(sizes.index)).all()


def test_numbers_recompute_from_the_cached_models(quick_run, no_training):
    split = load_split("synthetic", progress=False)
    r = quick_run["results"].set_index("model")
    g = quick_run["groups"].set_index(["model", "group"])
    for key in ("multvae", "recvae-pia", "cdae"):
        ev = evaluate(get_trained(_config(key), progress=False).model.score, split.test)
        summary = ev.summary()
        for m in METRICS:
            assert math.isclose(r.loc[key, m], summary[m]["mean"], rel_tol=1e-12)
            assert math.isclose(r.loc[key, f"{m}_se"], summary[m]["se"], rel_tol=1e-12)
        for label, s in ev.groups(USER_GROUPS).items():
            assert g.loc[(key, label), "n"] == s["ndcg@100"]["n"]
            if s["ndcg@100"]["n"]:
                assert math.isclose(g.loc[(key, label), "ndcg@100"], s["ndcg@100"]["mean"], rel_tol=1e-12)
    model, search = select_ease_lambda(split, LAMBDAS)
    assert quick_run["json"]["runs"]["ease"]["lambda"] == search.best
    ease = evaluate(model.score, split.test).summary()
    assert math.isclose(r.loc["ease", "ndcg@100"], ease["ndcg@100"]["mean"], rel_tol=1e-6)
    for key in ("wmf", "bpr"):  # refitted with the quick setting and seed: the same factors, the same numbers
        score, record = fit_factorisation(key, split, quick=True, seed=0)
        assert quick_run["json"]["runs"][key]["setting"] == record["setting"]
        again = evaluate(score, split.test).summary()
        assert math.isclose(r.loc[key, "ndcg@100"], again["ndcg@100"]["mean"], rel_tol=1e-6)


def test_the_ract_row_is_the_multvae_rows_run_fine_tuned_and_paired_with_it(quick_run, no_training):
    split = load_split("synthetic", progress=False)
    record = quick_run["json"]["runs"]["ract"]
    actor = get_trained(_config("multvae"), progress=False)
    assert Path(record["actor_run"]) == actor.run and Path(record["run"]).parent == actor.run.parent
    assert record["settings"]["critic_epochs"] == QUICK_RACT["critic_epochs"]
    ours = evaluate(load_ract(Path(record["run"])).score, split.test)
    theirs = evaluate(actor.model.score, split.test)
    r = quick_run["results"].set_index("model")
    assert math.isclose(r.loc["ract", "ndcg@100"], ours.summary()["ndcg@100"]["mean"], rel_tol=1e-12)
    p = quick_run["paired"]
    p = p[p["comparison"] == "RaCT - Multi-VAE"].set_index(["group", "metric"])
    d = paired_difference(ours, theirs, "ndcg@100")
    assert math.isclose(p.loc[("all", "ndcg@100"), "mean"], d["mean"], rel_tol=1e-9, abs_tol=1e-15)


def test_paired_differences_equal_the_library(quick_run, no_training):
    split = load_split("synthetic", progress=False)
    evs = {
        k: evaluate(get_trained(_config(k), progress=False).model.score, split.test) for k in ("multvae", "multvae-pia")
    }
    p = quick_run["paired"]
    p = p[p["comparison"].str.startswith("Multi-VAE + PIA")].set_index(["group", "metric"])
    for m in METRICS:
        d = paired_difference(evs["multvae-pia"], evs["multvae"], m)
        assert math.isclose(p.loc[("all", m), "mean"], d["mean"], rel_tol=1e-9, abs_tol=1e-15)
        assert p.loc[("all", m), "n"] == d["n"]
    # per group: the mean of the per-user differences of that group
    a, b = evs["multvae-pia"], evs["multvae"]
    for label, lo, hi in USER_GROUPS:
        mask = (a.n_interactions >= lo) & (a.n_interactions <= hi)
        if mask.any():
            diff = a.per_user["ndcg@100"][mask] - b.per_user["ndcg@100"][mask]
            assert math.isclose(p.loc[(label, "ndcg@100"), "mean"], diff.mean(), rel_tol=1e-9, abs_tol=1e-15)


def test_paper_columns_are_na_off_the_published_datasets(quick_run):
    r = quick_run["results"]
    assert r[[f"paper_{m}" for m in METRICS]].isna().all().all()
    assert quick_run["json"]["published"]["comparable"] is False
    assert "n/a" in quick_run["stdout"] and "like for like only on ml-20m, netflix and msd" in quick_run["stdout"]


def _fake_evaluation(n: int, seed: int) -> Evaluation:
    rng = np.random.default_rng(seed)
    return Evaluation(
        per_user={m: rng.random(n) for m in METRICS},
        rows=np.arange(n),
        n_interactions=rng.integers(5, 300, n),
        n_users=n,
        n_excluded=0,
    )


@pytest.mark.parametrize("dataset", ["ml-20m", "netflix", "msd"])
def test_published_datasets_fill_the_paper_columns(dataset):
    evs = {k: _fake_evaluation(50, i) for i, k in enumerate(MODEL_SPECS)}
    table = results_table(evs, dataset).set_index("model")
    for key in MODEL_SPECS:
        for m in METRICS:
            published = {**PUBLISHED[dataset], **PUBLISHED_BASELINES[dataset]}
            if key == "multdae":  # the paper has no Multi-DAE row
                assert np.isnan(table.loc[key, f"paper_{m}"])
            else:
                assert table.loc[key, f"paper_{m}"] == published[key][m]
                assert math.isclose(table.loc[key, f"diff_{m}"], table.loc[key, m] - published[key][m])


SEED = PAPER.parent / "seed"


def test_published_baselines_equal_the_seed_posters_table():
    """Each transcribed baseline row equals its row of the poster's offline table (ML-20M, Netflix, MSD)."""
    names = {"MF": "bpr", "WMF": "wmf", "CDAE": "cdae", "RACT": "ract"}
    posters = sorted(SEED.glob("*.txt")) if SEED.is_dir() else []
    if not posters:
        pytest.skip(f"the seed poster is not beside the repository ({SEED}); CI has it")
    seen = set()
    for line in posters[0].read_text(encoding="utf-8").splitlines():
        cells = line.split("\t")
        if cells[0] in names and len(cells) == 10:
            values = [float(c) for c in cells[1:]]
            for d, dataset in enumerate(("ml-20m", "netflix", "msd")):
                row = PUBLISHED_BASELINES[dataset][names[cells[0]]]
                assert [row[m] for m in METRICS] == values[3 * d : 3 * d + 3], cells[0]
            seen.add(cells[0])
    assert seen == set(names)


def _paper_text() -> str:
    return PAPER.read_text() if PAPER.is_file() else ""


def test_published_numbers_equal_paper_md():
    text = _paper_text()
    names = {
        "EASE": "ease",
        "Multi-VAE": "multvae",
        "Multi-VAE + PIA": "multvae-pia",
        "RecVAE": "recvae",
        "RecVAE + PIA": "recvae-pia",
    }
    if not text:  # without the notes, at least the transcription must be complete and plausible
        assert sorted(PUBLISHED) == ["ml-20m", "msd", "netflix"]
        assert all(0 < v < 1 for d in PUBLISHED.values() for m in d.values() for v in m.values())
        return
    seen = 0
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in names and len(cells) == 10:
            values = [float(c) for c in cells[1:]]
            key = names[cells[0]]
            for j, dataset in enumerate(("ml-20m", "netflix", "msd")):
                assert [PUBLISHED[dataset][key][m] for m in METRICS] == values[3 * j : 3 * j + 3], (key, dataset)
            seen += 1
    assert seen == 5
    groups = 0
    for line in text.splitlines():
        m = re.match(r"^\|\s*(\[[^\]]+\])\s*\|([^|]+)\|([^|]+)\|\s*$", line)
        if m:
            label = m.group(1)
            for key, cell in (("multvae", m.group(2)), ("multvae-pia", m.group(3))):
                values = [float(v) for v in cell.split(",")]
                assert [PUBLISHED_GROUPS["ml-20m"][key][label][mm] for mm in METRICS] == values, (key, label)
            groups += 1
    assert groups == len(USER_GROUPS)


def test_group_labels_of_the_published_table_are_the_evaluation_groups():
    for per_model in PUBLISHED_GROUPS["ml-20m"].values():
        assert list(per_model) == [g[0] for g in USER_GROUPS]


def test_parse_models_keeps_table_order_and_rejects_unknown_names():
    assert parse_models("multdae, ease,MULTVAE") == ["ease", "multvae", "multdae"]
    with pytest.raises(ValueError, match="--models: unknown model"):
        parse_models("multvae,foo")
    with pytest.raises(ValueError, match="--models"):
        parse_models(" , ")


def test_paired_table_of_identical_models_is_zero():
    ev = _fake_evaluation(40, 3)
    t = paired_table(ev, ev, "same")
    assert (t["mean"] == 0).all() and set(t["group"]) >= {"all"}


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--models", "multvae,bogus"], "--models"),
        (["--rho", "0"], "--rho"),
        (["--rho", "1.5"], "--rho"),
        (["--lambda-a", "0"], "--lambda-a"),
        (["--epochs", "0"], "--epochs"),
        (["--ease-lambdas", "1,x"], "--ease-lambdas"),
        (["--seed", "abc"], "--seed"),
    ],
)
def test_bad_options_give_one_error_line_and_exit_code_2(argv, needle, usage_error):
    usage_error(main, ["--dataset", "synthetic", *argv], needle)


def test_offline_dataset_gives_one_line_and_exit_code_2(offline_error):
    offline_error(main, ["--models", "ease"])

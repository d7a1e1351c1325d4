"""models.compare: Holm's correction against its definition, the paired tests against scipy's own, their error
rate on simulated nulls and power on a planted gain, and the command line on per-user files and run folders."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from models.compare import PerUser, compare, holm, main, paired_test

METRICS = ("recall@20", "recall@50", "ndcg@100")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12))
def test_holm_is_the_step_down_maximum_of_its_definition(p):
    """adj_i = max over the j ranked at or below i of min(1, (m - rank_j) p_j), written out pair by pair."""
    m = len(p)
    rank = {i: sorted(range(m), key=lambda j: (p[j], j)).index(i) for i in range(m)}
    expected = [max(min(1.0, (m - rank[j]) * p[j]) for j in range(m) if rank[j] <= rank[i]) for i in range(m)]
    assert holm(p) == pytest.approx(expected)
    assert np.all(holm(p) >= np.asarray(p) - 1e-12)


def test_holm_rejects_impossible_p_values():
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        holm([0.2, 1.5])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        holm([float("nan")])


def test_paired_test_agrees_with_scipys_paired_tests():
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 1, 300)
    b = a + rng.normal(0.02, 0.1, 300)
    b[:40] = a[:40]  # ties at zero difference, as recall often has
    r = paired_test(a, b)
    assert r["diff"] == pytest.approx(np.mean(b - a)) and r["n"] == 300 and r["n_nonzero"] == 260
    assert r["se"] == pytest.approx(np.std(b - a, ddof=1) / np.sqrt(300))
    assert r["t_p"] == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert r["wilcoxon_p"] == pytest.approx(stats.wilcoxon(b[40:] - a[40:]).pvalue)
    half = stats.t.ppf(0.975, 299) * r["se"]
    assert r["ci"] == pytest.approx([r["diff"] - half, r["diff"] + half])


def test_paired_test_edge_cases_say_what_they_are():
    same = np.array([0.1, 0.5, 0.2])
    r = paired_test(same, same)
    assert r["diff"] == 0 and r["t_p"] == 1.0 and r["wilcoxon_p"] == 1.0 and r["n_nonzero"] == 0
    shifted = paired_test(same, same + 0.1)
    assert shifted["t_p"] < 1e-12 and shifted["se"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2 users"):
        paired_test(same[:1], same[:1])
    with pytest.raises(ValueError, match="NaN"):
        paired_test(same, np.array([0.1, np.nan, 0.2]))


def _models(rng, n_users: int, gains: dict[str, float]) -> list[PerUser]:
    """Per-user metrics of several models: a shared user difficulty plus each model's noise plus its gain."""
    difficulty = rng.beta(2, 5, (n_users, len(METRICS)))
    users = [f"u{i}" for i in range(n_users)]
    out = []
    for label, gain in gains.items():
        values = np.clip(difficulty + rng.normal(gain, 0.08, difficulty.shape), 0, 1)
        table = pd.DataFrame(values, columns=list(METRICS))
        table.insert(0, "user", users)
        table.insert(1, "group", np.where(np.arange(n_users) % 2, "[5-10]", "[11-50]"))
        out.append(PerUser(label, table, label))
    return out


@pytest.mark.slow
def test_holm_keeps_the_familywise_error_on_nulls_and_finds_a_planted_gain():
    """Three models equal to the baseline in law (9 comparisons): any Holm rejection at 5% in at most about 5% of
    400 simulations (the uncorrected tests reject somewhere far more often); a gain of 0.04 (5 standard errors)
    found every time."""
    rng = np.random.default_rng(0)
    any_holm = any_raw = 0
    n_sims = 400
    for _ in range(n_sims):
        doc = compare(_models(rng, 200, {"base": 0.0, "b": 0.0, "c": 0.0, "d": 0.0}))
        any_holm += any(r["t_p_holm"] <= 0.05 for r in doc["rows"])
        any_raw += any(r["t_p"] <= 0.05 for r in doc["rows"])
    assert any_holm / n_sims <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / n_sims)
    assert any_raw / n_sims > 0.2
    for _ in range(20):
        doc = compare(_models(rng, 200, {"base": 0.0, "better": 0.04, "same": 0.0}))
        better = [r for r in doc["rows"] if r["model"] == "better"]
        assert all(r["t_p_holm"] <= 0.05 and r["wilcoxon_p_holm"] <= 0.05 and r["ci"][0] > 0 for r in better)


def test_compare_aligns_users_and_reports_groups():
    rng = np.random.default_rng(1)
    base, other = _models(rng, 50, {"base": 0.0, "other": 0.05})
    shuffled = PerUser("other", other.table.sample(frac=1.0, random_state=0).reset_index(drop=True), "other")
    doc = compare([base, shuffled], metrics=["ndcg@100"])
    d = other.table["ndcg@100"] - base.table["ndcg@100"]
    (row,) = doc["rows"]
    assert row["diff"] == pytest.approx(d.mean())
    odd = base.table["group"] == "[5-10]"
    assert row["groups"]["[5-10]"]["diff"] == pytest.approx(d[odd].mean())
    assert list(row["groups"]) == ["[5-10]", "[11-50]"] and row["groups"]["[11-50]"]["n"] == int((~odd).sum())


def _write(path, table: pd.DataFrame):
    table.to_csv(path, index=False)
    return path


def test_the_command_writes_json_and_markdown(tmp_path, capsys):
    rng = np.random.default_rng(2)
    a, b = _models(rng, 120, {"a": 0.0, "b": 0.03})
    fa, fb = _write(tmp_path / "a.csv", a.table), _write(tmp_path / "b.csv", b.table)
    out = tmp_path / "cmp"
    assert main([str(fa), str(fb), "--labels", "Multi-VAE", "PIA", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "compare.json").read_text())
    assert doc["baseline"] == "Multi-VAE" and doc["models"] == ["PIA"] and doc["users"] == 120
    assert [r["metric"] for r in doc["rows"]] == list(METRICS)
    assert "| PIA | ndcg@100 |" in printed and (out / "compare.md").read_text() in printed
    assert "Holm across 3 comparisons" in doc["correction"]


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda t: t.iloc[:-2], "different users (2 only in a, e.g. u118, u119; 0 only in b)"),
        (lambda t: t.drop(columns=["user"]), "no 'user' column"),
        (lambda t: t.assign(**{"ndcg@100": "x"}), "non-numeric values"),
        (lambda t: t.assign(score=1.0), "column 'score' is not a metric"),
        (lambda t: pd.concat([t, t.iloc[:1]]), "user 'u0' appears 2 times"),
    ],
)
def test_bad_inputs_give_one_line(tmp_path, capsys, edit, needle):
    rng = np.random.default_rng(4)
    a, b = _models(rng, 120, {"a": 0.0, "b": 0.0})
    fa, fb = _write(tmp_path / "a.csv", a.table), _write(tmp_path / "b.csv", edit(b.table))
    assert main([str(fa), str(fb), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_bad_options_give_one_line(tmp_path, capsys):
    f = tmp_path / "a.csv"
    assert main([str(f)]) == 2
    assert "at least one model" in capsys.readouterr().err
    assert main([str(f), str(tmp_path / "nope.csv")]) == 2
    assert "no such run folder or per-user CSV" in capsys.readouterr().err
    assert main([str(f), str(f), "--labels", "x"]) == 2
    assert "--labels names 1 inputs, but 2" in capsys.readouterr().err


def test_run_folders_are_compared_through_their_per_user_values(tmp_path, capsys):
    """Two trained runs: one evaluated with models.evaluate (its CSV read), one evaluated here in memory."""
    from models.evaluate import main as eval_main
    from models.train import main as train_main

    flags = ["--dataset", "synthetic", "--hidden", "16", "--latent", "4", "--epochs", "2", "--no-progress"]
    runs = [tmp_path / "r0", tmp_path / "r1"]
    for seed, run in enumerate(runs):
        assert train_main([*flags, "--seed", str(seed), "--out", str(run)]) == 0
    assert eval_main([str(runs[0])]) == 0
    capsys.readouterr()
    assert main([str(runs[0]), str(runs[1]), "--out", str(tmp_path / "cmp")]) == 0
    captured = capsys.readouterr()
    assert "r1: no test_per_user.csv; evaluating" in captured.err
    doc = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    saved = pd.read_csv(runs[0] / "test_per_user.csv")
    assert doc["users"] == len(saved) and doc["sources"]["r0"].endswith("test_per_user.csv")
    row = next(r for r in doc["rows"] if r["metric"] == "ndcg@100")
    assert row["mean_baseline"] == pytest.approx(saved["ndcg@100"].mean())
    assert set(doc["rows"][0]["groups"]) <= {"[5-10]", "[11-50]", "[51-100]", "[100+]"}

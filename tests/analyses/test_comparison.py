"""analyses.comparison: the ledger's accuracy table from pia_uplift's JSON and a baselines file, its intervals
checked against scipy, the reference row merged only when it is the same model, bad files refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from analyses.common import JobError
from analyses.comparison import baselines_comparison, comparison_rows, comparison_table, read_baselines

SEEDS = (0, 1, 2)
BASE = {0: 0.40, 1: 0.41, 2: 0.39}
PIA = {0: 0.42, 1: 0.43, 2: 0.40}
GAIN = {0: 0.019, 1: 0.021, 2: 0.009}  # paired means: not PIA - BASE (a paired mean need not be the difference)


def _t_interval(values, se):
    """The across-seed interval with the test users' shared sampling error, by its formula with scipy's t:
    a = var / n, b = se^2 (one SE for every seed here), Satterthwaite's df = (a + b)^2 (n - 1) / a^2, half-width
    max(t_df sqrt(a + b), t_{n-1} sqrt(a))."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    a, b = v.var(ddof=1) / n, se**2
    df = (a + b) ** 2 * (n - 1) / a**2
    half = max(stats.t.ppf(0.975, df) * np.sqrt(a + b), stats.t.ppf(0.975, n - 1) * np.sqrt(a))
    return v.mean(), [v.mean() - half, v.mean() + half]


def uplift_doc(base=BASE):
    per_seed = [
        {
            "seed": s,
            "baseline": {"test": {"ndcg@100": {"mean": base[s], "se": 0.007}}},
            "pia": {"test": {"ndcg@100": {"mean": PIA[s], "se": 0.0071}}},
            "paired": {"ndcg@100": {"mean": GAIN[s], "se": 0.003}},
        }
        for s in SEEDS
    ]
    return {"per_architecture": {"multvae": {"label": "Multi-VAE", "chosen_lambda": 1.0, "per_seed": per_seed}}}


def baselines_doc(reference=BASE):
    def block(values, paired, setting):
        return {
            "metrics": {"ndcg@100": {"per_seed": {str(s): [values[s], 0.007] for s in SEEDS}}},
            "paired": {"ndcg@100": {"per_seed": {str(s): [paired[s], 0.004] for s in SEEDS}}},
            "setting": setting,
        }

    return {
        "command": "python experiments/baselines_ml1m.py --seeds 0 1 2",
        "seeds": list(SEEDS),
        "reference": "Multi-VAE",
        "models": {
            "Multi-VAE": block(reference, dict.fromkeys(SEEDS, 0.0), "rho 0.5"),
            "WMF": block({0: 0.424, 1: 0.423, 2: 0.425}, {0: 0.023, 1: 0.022, 2: 0.024}, "factors 50"),
            "EASE": {
                "metrics": {"ndcg@100": {"mean": 0.425, "se_over_users": 0.0074, "one_fit": True}},
                "paired": {"ndcg@100": {"per_seed": {str(s): [0.024 + 0.001 * s, 0.004] for s in SEEDS}}},
                "setting": "lambda 500",
            },
        },
    }


def _by_model(rows):
    return {r["model"]: r for r in rows}


def test_rows_carry_means_and_t_intervals_across_seeds_and_the_paired_differences():
    rows = _by_model(comparison_rows("ml-1m", uplift_doc(), "u.json", "cmd", baselines_doc(), "b.json"))
    assert list(rows) == ["Multi-VAE", "Multi-VAE + PIA", "WMF", "EASE"]
    mean, ci = _t_interval(list(BASE.values()), 0.007)
    assert rows["Multi-VAE"]["ndcg@100"] == pytest.approx(mean) and rows["Multi-VAE"]["ci"] == pytest.approx(ci)
    pia = rows["Multi-VAE + PIA"]
    mean, ci = _t_interval(list(GAIN.values()), 0.003)  # the paired means, not the difference of the arm means
    assert pia["compared_with"] == "Multi-VAE" and pia["delta"] == pytest.approx(mean)
    assert pia["delta_ci"] == pytest.approx(ci)
    assert [d["mean"] for d in pia["delta_per_seed"]] == list(GAIN.values())
    wmf = rows["WMF"]
    mean, ci = _t_interval([0.023, 0.022, 0.024], 0.004)
    assert wmf["delta"] == pytest.approx(mean) and wmf["delta_ci"] == pytest.approx(ci)
    # seeds that agree closely on the same test users: their sampling error, not their spread, sets the width
    plain = stats.t.ppf(0.975, 2) * 0.001 / np.sqrt(3)
    assert wmf["delta_ci"][1] - wmf["delta"] > 2 * plain
    assert wmf["ndcg@100"] == pytest.approx(0.424) and wmf["seeds"] == [0, 1, 2]


def test_the_baselines_reference_is_merged_only_when_it_is_the_same_model():
    same = _by_model(comparison_rows("d", uplift_doc(), "u.json", "cmd", baselines_doc(), "b.json"))
    assert "also the reference" in same["Multi-VAE"]["note"] and same["WMF"]["compared_with"] == "Multi-VAE"
    other = {0: 0.40, 1: 0.41, 2: 0.3901}  # one seed differs: another model
    rows = _by_model(comparison_rows("d", uplift_doc(), "u.json", "cmd", baselines_doc(other), "b.json"))
    assert same["Multi-VAE"]["note"] is not None and rows["Multi-VAE"]["note"] is None
    assert rows["WMF"]["compared_with"] == "Multi-VAE (baselines run)"
    assert rows["Multi-VAE (baselines run)"]["ndcg@100"] == pytest.approx(np.mean(list(other.values())))
    # without the uplift the reference is the file's own row
    alone = _by_model(baselines_comparison("d", baselines_doc(), "b.json"))
    assert "Multi-VAE (baselines run)" in alone and alone["EASE"]["compared_with"] == "Multi-VAE (baselines run)"


def test_a_deterministic_fit_has_no_interval_across_seeds_and_says_why():
    ease = _by_model(baselines_comparison("d", baselines_doc(), "b.json"))["EASE"]
    assert ease["ci"] is None and "one deterministic fit" in ease["ci_kind"]
    assert ease["ndcg@100"] == pytest.approx(0.425) and ease["se_over_users"] == pytest.approx(0.0074)
    assert ease["delta"] == pytest.approx(0.025)  # its paired differences still vary with the reference's seed
    table = comparison_table([ease])
    assert "0.4250 ± 0.0074 SE over users (one deterministic fit" in table and "[+0.0" in table


def test_one_seed_gives_no_interval():
    doc = uplift_doc()
    doc["per_architecture"]["multvae"]["per_seed"] = doc["per_architecture"]["multvae"]["per_seed"][:1]
    rows = comparison_rows("d", doc, "u.json", "cmd")
    assert all(r["ci"] is None for r in rows) and rows[1]["delta_ci"] is None
    assert "n/a" not in comparison_table(rows).split("\n")[2]  # the value is printed, the interval left out


def test_the_table_has_one_line_per_row_with_the_numbers():
    rows = comparison_rows("ml-1m", uplift_doc(), "u.json", "cmd", baselines_doc(), "b.json")
    lines = comparison_table(rows).strip().split("\n")
    assert len(lines) == 2 + len(rows)
    assert "(reference)" in lines[2] and "| WMF |" in lines[4] and "+0.0230" in lines[4]


def _write(tmp_path, doc):
    path = tmp_path / "results.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda d: "{not json", "not JSON"),
        (lambda d: {**d, "models": {}}, "no 'models'"),
        (lambda d: {k: v for k, v in d.items() if k != "reference"}, "'reference' (None)"),
        (lambda d: {**d, "reference": "EASE2"}, "'reference' ('EASE2')"),
        (lambda d: {**d, "models": {**d["models"], "WMF": {"metrics": {}}}}, "model 'WMF' lacks"),
        (
            lambda d: {
                **d,
                "models": {
                    **d["models"],
                    "WMF": {**d["models"]["WMF"], "metrics": {"ndcg@100": {"per_seed": {"0": [float("nan"), 0.1]}}}},
                },
            },
            "non-finite",
        ),
    ],
)
def test_a_bad_baselines_file_is_one_line_naming_it(tmp_path, change, needle):
    path = _write(tmp_path, change(baselines_doc()))
    with pytest.raises(JobError, match=None) as err:
        read_baselines(path, "ml-1m")
    text = str(err.value)
    assert needle in text and f"ml-1m={path}" in text and "\n" not in text


def test_an_unreadable_baselines_file_is_one_line(tmp_path):
    with pytest.raises(JobError, match="cannot read it"):
        read_baselines(tmp_path / "missing.json", "ml-1m")
    assert read_baselines(_write(tmp_path, baselines_doc()), "ml-1m")["reference"] == "Multi-VAE"


def test_the_committed_ml1m_baselines_file_reads_and_matches_the_committed_uplift():
    """The committed files the README's ML-1M table comes from: the baselines' Multi-VAE is the uplift's baseline
    (the same configuration trained at the same seeds), so the table has one reference row."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    doc = read_baselines(root / "experiments" / "results_baselines_ml1m.json", "ml-1m")
    uplift = json.loads((root / "docs/claims/runs/ml-1m/pia_uplift/uplift.json").read_text())
    rows = _by_model(comparison_rows("ml-1m", uplift, "u.json", "cmd", doc, "b.json"))
    assert "Multi-VAE (baselines run)" not in rows and rows["CDAE"]["compared_with"] == "Multi-VAE"
    assert rows["CDAE"]["delta"] == pytest.approx(doc["models"]["CDAE"]["paired"]["ndcg@100"]["mean"])
    assert rows["CDAE"]["delta_ci"] == pytest.approx(doc["models"]["CDAE"]["paired"]["ndcg@100"]["ci"])


def test_the_job_writes_the_table_the_json_and_the_figure(tmp_path, run_cli):
    from analyses import comparison

    up = tmp_path / "uplift"
    up.mkdir()
    doc = uplift_doc()
    doc.update(job="pia_uplift", dataset={"name": "ml-1m"})
    (up / "uplift.json").write_text(json.dumps(doc))
    path = _write(tmp_path, baselines_doc())
    out = tmp_path / "cmp"
    code, stdout, stderr = run_cli(comparison.main, ["--uplift", str(up), "--baselines", str(path), "--out", str(out)])
    assert code == 0, stderr
    for name in ("comparison.json", "comparison.md", "comparison.png", "comparison.pdf", "result.json", "COMPLETE"):
        assert (out / name).is_file(), name
    rows = json.loads((out / "comparison.json").read_text())
    assert [r["model"] for r in rows] == ["Multi-VAE", "Multi-VAE + PIA", "WMF", "EASE"]
    assert {r["dataset"] for r in rows} == {"ml-1m"} and "| ml-1m | WMF |" in stdout


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "give --uplift, --baselines or both"),
        (["--baselines", "B"], "--dataset: name the dataset"),
        (["--uplift", "/nonexistent/uplift.json"], "cannot read it"),
        (["--uplift", "NOTUPLIFT"], "not a pia_uplift result"),
        (["--uplift", "U", "--dataset", "ml-100k"], "the uplift ran on ml-1m"),
    ],
)
def test_the_job_refuses_bad_inputs_in_one_line(tmp_path, run_cli, argv, needle):
    from analyses import comparison

    doc = uplift_doc()
    doc.update(job="pia_uplift", dataset={"name": "ml-1m"})
    files = {"B": _write(tmp_path, baselines_doc()), "U": tmp_path / "u.json", "NOTUPLIFT": tmp_path / "n.json"}
    files["U"].write_text(json.dumps(doc))
    files["NOTUPLIFT"].write_text(json.dumps({"job": "claims"}))
    argv = [str(files.get(a, a)) for a in argv]
    code, _, stderr = run_cli(comparison.main, [*argv, "--out", str(tmp_path / "out")])
    assert code == 2 and needle in stderr and len(stderr.strip().splitlines()) == 1, stderr

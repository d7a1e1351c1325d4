"""The results table: the models it compares, the paper's published numbers, and the tables built from evaluations.

Shared by the jobs that report ranking quality (:mod:`analyses.reproduce`, :mod:`analyses.pia_geometry`,
:mod:`analyses.cohorts`): one list of model rows (:data:`MODEL_SPECS`), one transcription of the paper's tables
(:data:`PUBLISHED`, :data:`PUBLISHED_GROUPS`, :data:`PUBLISHED_ABLATION`) and the tables of
:class:`models.evaluation.Evaluation` results: per model, per user group, and paired differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geometry.intervals import mean_t_interval
from models.evaluation import DEFAULT_METRICS, USER_GROUPS, Evaluation, paired_difference
from models.lazy import lazy_import

pd = lazy_import("pandas")
stats = lazy_import("scipy.stats")

METRICS: tuple[str, ...] = DEFAULT_METRICS  # recall@20, recall@50, ndcg@100

# ------------------------------------------------------------------------------------------ published numbers

PUBLISHED_SOURCE = (
    "Vuong, Monteil, Dang, Vaskovych, Le, Nguyen, 'On the Mechanisms of Collaborative Learning in VAE "
    "Recommenders', ICLR 2026 (arXiv 2511.06781): results tables as transcribed in the project's PAPER.md, "
    "section 7 (test users, strong generalization of Liang et al. 2018)"
)
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "ml-20m": {
        "ease": {"recall@20": 0.391, "recall@50": 0.521, "ndcg@100": 0.420},
        "multvae": {"recall@20": 0.398, "recall@50": 0.537, "ndcg@100": 0.426},
        "multvae-pia": {"recall@20": 0.408, "recall@50": 0.546, "ndcg@100": 0.437},
        "recvae": {"recall@20": 0.414, "recall@50": 0.553, "ndcg@100": 0.442},
        "recvae-pia": {"recall@20": 0.417, "recall@50": 0.556, "ndcg@100": 0.446},
    },
    "netflix": {
        "ease": {"recall@20": 0.362, "recall@50": 0.445, "ndcg@100": 0.393},
        "multvae": {"recall@20": 0.351, "recall@50": 0.444, "ndcg@100": 0.386},
        "multvae-pia": {"recall@20": 0.360, "recall@50": 0.448, "ndcg@100": 0.392},
        "recvae": {"recall@20": 0.361, "recall@50": 0.452, "ndcg@100": 0.394},
        "recvae-pia": {"recall@20": 0.365, "recall@50": 0.454, "ndcg@100": 0.396},
    },
    "msd": {
        "ease": {"recall@20": 0.333, "recall@50": 0.428, "ndcg@100": 0.389},
        "multvae": {"recall@20": 0.266, "recall@50": 0.364, "ndcg@100": 0.316},
        "multvae-pia": {"recall@20": 0.275, "recall@50": 0.372, "ndcg@100": 0.326},
        "recvae": {"recall@20": 0.276, "recall@50": 0.374, "ndcg@100": 0.326},
        "recvae-pia": {"recall@20": 0.278, "recall@50": 0.376, "ndcg@100": 0.329},
    },
}
"""Published test metrics: ``PUBLISHED[dataset][model][metric]`` (no Multi-DAE row in the paper)."""

PUBLISHED_BASELINES_SOURCE = (
    "the same paper's offline benchmark table as printed on the project's seed poster (shared/seed, 'Offline "
    "benchmarks'); PAPER.md transcribes only the VAE and EASE rows. The poster's MF row is listed under bpr: which "
    "MF the paper ran is not said, and BPR-MF is the ranking MF this toolkit runs (models/bpr.py)"
)
PUBLISHED_BASELINES: dict[str, dict[str, dict[str, float]]] = {
    "ml-20m": {
        "bpr": {"recall@20": 0.367, "recall@50": 0.498, "ndcg@100": 0.399},
        "wmf": {"recall@20": 0.362, "recall@50": 0.495, "ndcg@100": 0.389},
        "cdae": {"recall@20": 0.391, "recall@50": 0.522, "ndcg@100": 0.418},
        "ract": {"recall@20": 0.403, "recall@50": 0.543, "ndcg@100": 0.434},
    },
    "netflix": {
        "bpr": {"recall@20": 0.335, "recall@50": 0.422, "ndcg@100": 0.369},
        "wmf": {"recall@20": 0.331, "recall@50": 0.402, "ndcg@100": 0.349},
        "cdae": {"recall@20": 0.343, "recall@50": 0.428, "ndcg@100": 0.376},
        "ract": {"recall@20": 0.357, "recall@50": 0.450, "ndcg@100": 0.392},
    },
    "msd": {
        "bpr": {"recall@20": 0.258, "recall@50": 0.353, "ndcg@100": 0.314},
        "wmf": {"recall@20": 0.211, "recall@50": 0.312, "ndcg@100": 0.257},
        "cdae": {"recall@20": 0.188, "recall@50": 0.283, "ndcg@100": 0.237},
        "ract": {"recall@20": 0.268, "recall@50": 0.364, "ndcg@100": 0.319},
    },
}
"""Published test metrics of the baselines the toolkit runs beyond PAPER.md's rows (source above):
``PUBLISHED_BASELINES[dataset][model][metric]``."""

PUBLISHED_GROUPS: dict[str, dict[str, dict[str, dict[str, float]]]] = {
    "ml-20m": {
        "multvae": {
            "[5-10]": {"recall@20": 0.461, "recall@50": 0.625, "ndcg@100": 0.317},
            "[11-50]": {"recall@20": 0.421, "recall@50": 0.595, "ndcg@100": 0.429},
            "[51-100]": {"recall@20": 0.313, "recall@50": 0.478, "ndcg@100": 0.497},
            "[100+]": {"recall@20": 0.418, "recall@50": 0.386, "ndcg@100": 0.474},
        },
        "multvae-pia": {
            "[5-10]": {"recall@20": 0.473, "recall@50": 0.629, "ndcg@100": 0.323},
            "[11-50]": {"recall@20": 0.424, "recall@50": 0.598, "ndcg@100": 0.434},
            "[51-100]": {"recall@20": 0.314, "recall@50": 0.479, "ndcg@100": 0.502},
            "[100+]": {"recall@20": 0.435, "recall@50": 0.393, "ndcg@100": 0.486},
        },
    }
}
"""Published user-group metrics (ML-20M only): ``PUBLISHED_GROUPS[dataset][model][group][metric]``."""

PUBLISHED_ABLATION: dict[str, dict[str, float]] = {
    "ml-20m": {"clean input": 0.409, "masking": 0.426, "masking + PIA": 0.437},
}
"""Published ablation, Multi-VAE test NDCG@100 (ML-20M only)."""

# ---------------------------------------------------------------------------------------- model configurations


@dataclass(frozen=True)
class ModelSpec:
    """One row of the results table: a trainer model with or without PIA, or a baseline fitted in the job
    (EASE, WMF, BPR-MF: ``model is None``)."""

    key: str
    label: str
    model: str | None
    pia: bool = False


MODEL_SPECS: dict[str, ModelSpec] = {
    s.key: s
    for s in (
        ModelSpec("ease", "EASE", None),
        ModelSpec("multvae", "Multi-VAE", "multvae"),
        ModelSpec("multvae-pia", "Multi-VAE + PIA", "multvae", pia=True),
        ModelSpec("recvae", "RecVAE", "recvae"),
        ModelSpec("recvae-pia", "RecVAE + PIA", "recvae", pia=True),
        ModelSpec("multdae", "Multi-DAE", "multdae"),
        ModelSpec("cdae", "CDAE", "cdae"),
        ModelSpec("wmf", "WMF", None),
        ModelSpec("bpr", "BPR-MF", None),
        # the Multi-VAE row's run, fine-tuned by RaCT (models.ract)
        ModelSpec("ract", "RaCT", "multvae"),
    )
}


# ---------------------------------------------------------------------------------------------------- tables


def parse_models(text: str) -> list[str]:
    """Model keys from ``--models`` (comma-separated, table order kept); ValueError naming the valid keys."""
    keys = [k.strip().lower() for k in str(text).split(",") if k.strip()]
    unknown = [k for k in keys if k not in MODEL_SPECS]
    if unknown or not keys:
        raise ValueError(
            f"--models: unknown model(s) {', '.join(unknown) or '(none given)'}; choose from {','.join(MODEL_SPECS)}"
        )
    return [k for k in MODEL_SPECS if k in keys]


def published_value(dataset: str, model: str, metric: str) -> float:
    """The paper's number, or NaN when it has none for this dataset and model."""
    rows = {**PUBLISHED.get(dataset, {}), **PUBLISHED_BASELINES.get(dataset, {})}
    return rows.get(model, {}).get(metric, math.nan)


def published_group_value(dataset: str, model: str, group: str, metric: str) -> float:
    return PUBLISHED_GROUPS.get(dataset, {}).get(model, {}).get(group, {}).get(metric, math.nan)


def results_table(evaluations: dict[str, Evaluation], dataset: str) -> pd.DataFrame:
    """One row per model: our mean and se of every metric next to the published number (NaN = n/a)."""
    rows = []
    for key, ev in evaluations.items():
        summary = ev.summary()
        row: dict = {"model": key, "label": MODEL_SPECS[key].label, "n_users": ev.n_evaluated}
        for m in METRICS:
            row[m], row[f"{m}_se"] = summary[m]["mean"], summary[m]["se"]
        for m in METRICS:
            row[f"paper_{m}"] = published_value(dataset, key, m)
        for m in METRICS:
            row[f"diff_{m}"] = row[m] - row[f"paper_{m}"]
        rows.append(row)
    return pd.DataFrame(rows)


def groups_table(evaluations: dict[str, Evaluation], dataset: str) -> pd.DataFrame:
    """One row per model and user group (:data:`models.evaluation.USER_GROUPS`), with published values (ML-20M)."""
    rows = []
    for key, ev in evaluations.items():
        for group, summ in ev.groups(USER_GROUPS).items():
            row: dict = {"model": key, "label": MODEL_SPECS[key].label, "group": group}
            row["n"] = next(iter(summ.values()))["n"]
            for m in METRICS:
                mean, se = summ[m]["mean"], summ[m]["se"]
                row[m] = math.nan if mean is None else mean
                row[f"{m}_se"] = math.nan if se is None else se
            for m in METRICS:
                row[f"paper_{m}"] = published_group_value(dataset, key, group, m)
            rows.append(row)
    return pd.DataFrame(rows)


def restrict(ev: Evaluation, mask: np.ndarray) -> Evaluation:
    """The evaluation of the users selected by ``mask`` (e.g. one user group), as a self-contained Evaluation."""
    mask = np.asarray(mask, dtype=bool)
    return Evaluation(
        per_user={m: v[mask] for m, v in ev.per_user.items()},
        rows=ev.rows[mask],
        n_interactions=ev.n_interactions[mask],
        n_users=int(mask.sum()),
        n_excluded=0,
    )


def paired_table(a: Evaluation, b: Evaluation, comparison: str) -> pd.DataFrame:
    """Paired difference ``a - b`` per metric, over all users and per user group (groups by history length)."""
    rows = []
    subsets = [("all", a, b)]
    for label, lo, hi in USER_GROUPS:
        ma = (a.n_interactions >= lo) & (a.n_interactions <= hi)
        mb = (b.n_interactions >= lo) & (b.n_interactions <= hi)
        if ma.any() and mb.any():
            subsets.append((label, restrict(a, ma), restrict(b, mb)))
    for group, ea, eb in subsets:
        for m in METRICS:
            d = paired_difference(ea, eb, m)
            rows.append({"comparison": comparison, "group": group, "metric": m, **d})
    return pd.DataFrame(rows)


def across_seeds(estimates: Sequence[float], level: float = 0.95, within_se: Sequence[float] | None = None) -> dict:
    """Mean of per-seed estimates with an interval across seeds (training noise included), optionally with the
    sampling error the seeds share.

    With ``n`` seeds and estimates ``e_s``: ``mean = sum(e_s) / n``, ``sd = std(e, ddof=1)``, ``a = sd^2 / n``.
    Without ``within_se`` the interval is Student's ``mean -+ t_{(1+level)/2, n-1} sqrt(a)``.

    With ``within_se`` (each seed's standard error over its users, e.g. of a paired per-user mean) the seeds are
    taken to measure the **same** users (the test users of a split, an overlapping sample), so the user-sampling
    error is common to all seeds: the spread between seeds does not contain it and averaging seeds does not
    shrink it. Then ``b = mean(within_se^2)``, ``se = sqrt(a + b)``, Satterthwaite's degrees of freedom with ``b``
    known (it comes from hundreds of users) ``df = (a + b)^2 (n - 1) / a^2``, and the half-width
    ``max(t_df se, t_{n-1} sqrt(a))`` (never narrower than the plain across-seed interval). By simulation
    (``tests/analyses/test_results.py``) its coverage stays at the level whether training noise is negligible
    or dominant next to the shared sampling error, where the plain interval covers 0-85% when training noise is
    at most the sampling error (reference: F. E. Satterthwaite, Biometrics Bulletin 2 (1946) 110-114).

    One seed has no interval (``ci`` None, ``reason`` says so): the within-seed standard error of a single
    trained model ignores the variation between trainings, so it must not decide a comparison on its own.

    Parameters
    ----------
    estimates : sequence of float, length n >= 1
        One estimate per seed (e.g. the mean paired per-user difference of each seed); NaN is an error.
    level : float in (0, 1)
    within_se : sequence of float >= 0, length n, optional
        Each seed's standard error of its estimate over the (shared) users.

    Returns
    -------
    dict
        ``{"mean", "sd", "se", "ci": [low, high] or None, "n", "df", "level", "reason"}``, plus
        ``"within_se"`` (``sqrt(b)``) when ``within_se`` is given; ``se`` is ``sqrt(a + b)`` and ``df`` the
        Satterthwaite value then (None when the seeds agree exactly: the normal quantile).

    Raises
    ------
    ValueError
        No estimates, a non-finite estimate or standard error, a negative standard error, ``within_se`` of
        another length, or a level outside (0, 1).
    """
    e = np.asarray(list(estimates), dtype=float)
    if e.size == 0:
        raise ValueError("across_seeds needs at least one per-seed estimate")
    if not np.all(np.isfinite(e)):
        raise ValueError(f"across_seeds got a non-finite per-seed estimate: {e.tolist()}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    w = None if within_se is None else np.asarray(list(within_se), dtype=float)
    if w is not None and (w.shape != e.shape or not np.all(np.isfinite(w)) or np.any(w < 0)):
        raise ValueError(f"within_se must be one finite standard error >= 0 per estimate, got {w.tolist()}")
    n = int(e.size)
    mean = float(e.mean())
    if n < 2:
        return {
            "mean": mean,
            "sd": None,
            "se": None,
            "ci": None,
            "n": n,
            "df": 0,
            "level": level,
            "reason": "one seed: the variation between trainings is not measured",
        }
    mean, se, ci = mean_t_interval(e, level)
    out = {
        "mean": mean,
        "sd": float(e.std(ddof=1)),
        "se": se,
        "ci": list(ci),
        "n": n,
        "df": n - 1,
        "level": level,
        "reason": None,
    }
    if w is not None:
        a, b = se**2, float(np.mean(w**2))
        total = math.sqrt(a + b)
        df = (a + b) ** 2 * (n - 1) / a**2 if a > 0 else math.inf
        q = stats.t.ppf(0.5 + level / 2, df) if math.isfinite(df) else stats.norm.ppf(0.5 + level / 2)
        half = max(float(q) * total, float(stats.t.ppf(0.5 + level / 2, n - 1)) * se)
        # df None: the seeds agree exactly, the normal quantile applies (JSON has no infinity)
        out.update(
            se=total, ci=[mean - half, mean + half], df=df if math.isfinite(df) else None, within_se=math.sqrt(b)
        )
    return out


SHARED_ERROR_CI = "across seeds with the users' sampling error they share (Satterthwaite)"
"""How an :func:`across_seeds` interval with ``within_se`` is named in the tables and JSON that carry one."""


def across_seeds_of(per_seed: Sequence[tuple[float, float]], level: float = 0.95) -> dict:
    """:func:`across_seeds` of per-seed ``(mean, standard error over users)`` pairs, the users shared by the seeds
    (the test users of one split)."""
    return across_seeds([m for m, _ in per_seed], level, [se for _, se in per_seed])

# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Local and global collaboration in a VAE recommender
#
# A walk through the paper's account on **planted** data, where we know the answer: the synthetic generator
# (`models.synthetic`) draws users from taste groups over item clusters, in three activity cohorts, and plants
# *far-but-related* pairs: two users of the same taste who share **no** item. A clean encoder only sees
# overlap, so it cannot bring such a pair together (local collaboration); masking the input (keep rate `rho`)
# can (global collaboration). Every number below comes from the toolkit's own functions and jobs; the
# command-line version of each step is given beside it.
#
# This notebook is kept in sync with `docs/teaching.py` (jupytext, `py:percent`); it runs top to bottom in a
# few minutes on two cores (`tests/test_teaching_notebook.py` runs it). Outputs are stripped in the repository:
# run it to see them.

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Image, display

from analyses.common import planted_labels
from geometry import expansion_probability, masked_distance_pmf, pair_overlaps
from geometry.masking import sample_masked_distances
from models.data import load_split

torch.set_num_threads(1)  # the models here are tiny: a thread pool costs more than it saves (4x on 2 busy cores)
OUT = Path("teaching-out")  # every job below writes its folder here
split = load_split("synthetic", progress=False)
X = split.train
labels, _ = planted_labels(split)
print(f"{X.shape[0]:,} training users x {X.shape[1]:,} items, {X.nnz:,} interactions")
print("cohorts:", dict(zip(*np.unique(labels["cohort"], return_counts=True), strict=True)))

# %% [markdown]
# ## 1. The masked-distance law for one pair (Theorem 2.6)
#
# For users `u`, `v` with clean distance `d = |S_u Δ S_v|` and overlap `c = |S_u ∩ S_v|`, independent masks
# keeping each interaction with probability `rho` give exactly
#
# `D' ~ Binomial(d, rho) + Binomial(c, 2 rho (1 - rho))`, so `E[D'] = rho d + 2 rho (1 - rho) c`.
#
# An item both users have survives in both (distance 0), in neither (0), or in one only (distance 1, with
# probability `2 rho (1 - rho)`): shared items *create* distance. So `E[D'] > d` exactly when
# `c / d > 1 / (2 rho)`: close neighbours drift apart, distant users come closer.
#
# Take two pairs from the planted data: a **near** pair (same taste group, the largest overlap) and a
# **far-but-related** pair (same taste, nothing shared). Change `rho` and rerun the cell.

# %%
rho = 0.5  # keep rate: change it (0 < rho <= 1) and rerun this cell

group = labels["taste_group"]
rng = np.random.default_rng(0)
candidates = rng.choice(X.shape[0], size=(4000, 2))
candidates = candidates[(candidates[:, 0] != candidates[:, 1]) & (group[candidates[:, 0]] == group[candidates[:, 1]])]
overlap = pair_overlaps(X, candidates[:, 0], candidates[:, 1])
near = candidates[np.argmax(overlap.c - overlap.d / 4)]  # large overlap relative to the distance
far_related = labels["pairs"][0]

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for ax, (name, (u, v)) in zip(axes, [("near pair", near), ("far-but-related pair", far_related)], strict=True):
    o = pair_overlaps(X, [u], [v])
    d, c = int(o.d[0]), int(o.c[0])
    pmf = masked_distance_pmf(d, c, rho)
    draws = sample_masked_distances(X, [u], [v], rho, n_draws=4000, rng=1)[:, 0]
    k = np.arange(pmf.size)
    ax.bar(k, pmf, width=1.0, color="0.75", label="exact law")
    values, counts = np.unique(draws, return_counts=True)
    ax.plot(values, counts / draws.size, ".", label="4,000 masked draws")
    ax.axvline(d, color="C3", ls="--", label=f"clean distance d = {d}")
    ax.axvline(rho * d + 2 * rho * (1 - rho) * c, color="C0", label="E[D']")
    ax.set(
        title=f"{name}: d = {d}, c = {c}, c/d = {c / max(d, 1):.2f} vs 1/(2 rho) = {1 / (2 * rho):.2f}",
        xlabel="masked distance D'",
        ylabel="probability",
    )
    ax.set_xlim(max(0, k[pmf > 1e-6].min() - 2), max(d, k[pmf > 1e-6].max()) + 3)
    ax.legend(fontsize=8)
    print(f"{name}: Pr[D' >= d] = {float(expansion_probability(d, c, rho, d)):.3f}")
fig.tight_layout()

# %% [markdown]
# The near pair's law sits around `rho d + 2 rho (1 - rho) c`: when its overlap is large enough the mass lies
# *above* its clean distance (it drifts apart). The far-but-related pair shares nothing (`c = 0`), so its masked
# distance is `Binomial(d, rho)`, about `rho d`: masking brings it closer in absolute terms, though every pair
# shrinks by the same factor, which is why the job below also measures distances relative to each user's own
# masked neighbourhood.

# %% [markdown]
# ## 2. Contraction and expansion per stratum
#
# `python -m analyses.masking_contraction --dataset synthetic --rho 0.5 --quick` samples pairs in strata
# (`near`: within an anchor's k nearest users; `far`; `far-related`: the generator's planted pairs; `planted`:
# same taste group, no shared item) and computes, for every pair, the exact `Pr[D' <= delta]` (contraction into a
# radius `delta`, fixed or relative to the anchor's masked neighbourhood) and `Pr[D' >= delta]` (expansion out of
# it), checked against Monte Carlo masking of the real rows.

# %%
from analyses import masking_contraction  # noqa: E402

masking_contraction.main(
    ["--dataset", "synthetic", "--rho", "0.5", "--quick", "--no-progress", "--out", str(OUT / "masking")]
)
summary = pd.read_csv(OUT / "masking" / "summary.csv")
summary[
    ["stratum", "pairs", "mean_d", "mean_c", "share_expected_expansion", "p_contraction_masked", "p_expansion_masked"]
].round(3)

# %%
display(Image(OUT / "masking" / "probability_vs_rho.png", width=900))

# %% [markdown]
# Read the table by stratum: near pairs are the only ones whose expected masked distance can exceed their clean
# one (`share_expected_expansion`); relative to each anchor's masked neighbourhood they leave it with sizable
# probability (`p_expansion_masked`: drift), while the planted far pairs, which a clean encoder keeps apart,
# rarely enter it. Masking thus trades some local neighbours for intermittent global contacts.

# %% [markdown]
# ## 3. The KL budget: I(X_h; Z) + KL(q_h || p)
#
# The expected pairwise latent distance is bounded by the square root of the average KL to the prior, and that
# average splits into the information the code keeps about the (masked) input, `I(X_h; Z)`, and how far the
# aggregate posterior `q_h` is from the prior. `python -m analyses.kl_budget --dataset synthetic --quick` trains a
# small Multi-VAE per KL weight `beta` and estimates both terms with user-clustered intervals, flagging
# `I` when it is stuck at `log K` of the sample (not identifiable at that sample size).

# %%
from analyses import kl_budget  # noqa: E402

kl_budget.main(["--dataset", "synthetic", "--quick", "--no-progress", "--out", str(OUT / "kl")])
budget = pd.read_csv(OUT / "kl" / "budget.csv")
budget[["beta_cap", "rho", "val_ndcg@100", "mean_kl", "mean_kl_se", "mutual_information", "kl_aggregate"]].round(3)

# %%
display(Image(OUT / "kl" / "kl_decomposition.png", width=900))

# %% [markdown]
# A larger `beta` lowers the whole budget (the rate): latent distances shrink toward one another, which is
# global sharing by contraction, paid for with less information about each user. The split tells which part
# moves.

# %% [markdown]
# ## 4. What PIA changes
#
# PIA adds `lambda_A E_b[L_A]`, with `L_A = ||mu(x_h) - ebar_x||^2 + tr Sigma(x_h) + ...` (Proposition 3.1): the
# mean of the *masked* input's posterior is pulled toward the centroid of the anchors of the user's *full*
# history. Proposition 3.2: the variance of `mu` across masks, `tr Var_b mu`, shrinks.
# `python -m analyses.pia_geometry --dataset synthetic --quick` trains the same model with and without PIA
# (same seed and masks) and compares them user by user.

# %%
from analyses import pia_geometry  # noqa: E402

pia_geometry.main(["--dataset", "synthetic", "--quick", "--no-progress", "--out", str(OUT / "pia")])
geometry = pd.read_csv(OUT / "pia" / "summary.csv")
rows = geometry[(geometry.cohort == "all") & geometry.quantity.isin(["var_b", "var_b_relative", "drift_draws"])]
rows[["quantity", "no PIA", "PIA", "diff", "diff_se"]].round(4)

# %%
alignment = json.loads((OUT / "pia" / "summary.json").read_text())["centroid_alignment"]
print(
    f"||mu_u - own centroid|| - ||mu_u - another user's centroid||: {alignment['mean']:.3f} "
    f"(95% interval {alignment['ci'][0]:.3f} to {alignment['ci'][1]:.3f}; < 0: aligned with its own items)"
)
display(Image(OUT / "pia" / "geometry.png", width=900))

# %% [markdown]
# With PIA the posterior mean moves less from one mask draw to the next (the paired `var_b` difference is below
# 0) and sits nearer its own items' anchor centroid than another user's. Compare `var_b_relative`: PIA also pulls
# the users' means toward each other, so relative to the spread between users the shrinkage is far smaller (on
# this quick run it is not there at all), and the neighbourhood drift across draws need not fall. Which of these
# holds on real data, and whether any of it buys ranking accuracy, are paired, multi-seed questions:
# `python -m analyses.pia_uplift` and the claims ledger (`python -m analyses.claims`) answer them with intervals.

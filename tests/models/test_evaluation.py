"""Tests of models.evaluation: hand-computed cases, a brute-force reference, groups, errors."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.evaluation import (
    USER_GROUPS,
    Evaluation,
    evaluate,
    evaluate_rows,
    paired_difference,
    parse_metric,
    ranking_metrics,
    top_k_items,
)
from models.split import HeldOut


# ----------------------------------------------------------------------------------------------- helpers
def csr_from_sets(sets: list[set[int]] | list[list[int]], n_items: int) -> sp.csr_matrix:
    indptr = np.cumsum([0] + [len(s) for s in sets])
    indices = np.concatenate([np.sort(np.fromiter(s, dtype=np.int32)) for s in sets] + [np.zeros(0, np.int32)])
    data = np.ones(indices.size, dtype=np.float32)
    return sp.csr_matrix((data, indices.astype(np.int32), indptr), shape=(len(sets), n_items))


def heldout_from_sets(fold: list, targ: list, n_items: int) -> HeldOut:
    return HeldOut(
        fold_in=csr_from_sets(fold, n_items),
        targets=csr_from_sets(targ, n_items),
        users=np.arange(len(fold)),
    )


class LinearScorer:
    """Scores as a deterministic function of the fold-in row content, ``x W + bias``.

    ``evaluate`` passes only some rows, in batches, so the score of a user must not depend on row position.
    Records every batch it receives.
    """

    def __init__(self, weights: np.ndarray, bias: np.ndarray, as_tensor: bool = False):
        self.weights, self.bias, self.as_tensor = weights, bias, as_tensor
        self.batches: list[sp.csr_matrix] = []

    def __call__(self, fold_batch: sp.csr_matrix):
        self.batches.append(fold_batch)
        scores = np.asarray(fold_batch @ self.weights) + self.bias
        return torch.from_numpy(scores) if self.as_tensor else scores


def brute_force(scores: np.ndarray, fold: sp.csr_matrix, targ: sp.csr_matrix, ks: list[int]) -> dict[str, np.ndarray]:
    """Reference: per user, full argsort of the masked scores, loop over ranks (independent of the module)."""
    out: dict[str, list[float]] = {f"{m}@{k}": [] for k in ks for m in ("recall", "ndcg")}
    for u in range(scores.shape[0]):
        t_set = set(targ[u].indices.tolist())
        if not t_set:
            continue
        f_set = set(fold[u].indices.tolist())
        s = scores[u].astype(np.float64).copy()
        s[list(f_set)] = -np.inf
        ranking = [i for i in np.argsort(-s, kind="stable") if i not in f_set]
        for k in ks:
            hits = [1.0 if i in t_set else 0.0 for i in ranking[:k]]
            m = min(k, len(t_set))
            out[f"recall@{k}"].append(sum(hits) / m)
            dcg = sum(h / math.log2(r + 1) for r, h in enumerate(hits, start=1))
            idcg = sum(1.0 / math.log2(r + 1) for r in range(1, m + 1))
            out[f"ndcg@{k}"].append(dcg / idcg)
    return {name: np.asarray(v) for name, v in out.items()}


def make_evaluation(values: dict[str, list[float]], rows, n_inter, n_users: int) -> Evaluation:
    rows = np.asarray(rows, dtype=np.int64)
    return Evaluation(
        per_user={k: np.asarray(v, dtype=np.float64) for k, v in values.items()},
        rows=rows,
        n_interactions=np.asarray(n_inter),
        n_users=n_users,
        n_excluded=n_users - rows.size,
    )


# ----------------------------------------------------------------------------------- hand-computed cases
def test_single_user_hand_computed():
    # 6 items; fold-in {0}, targets {2, 4}. Scores 10, 5, 4, 3, 2, 1: item 0 (fold-in) would be first but is
    # masked, so the ranking is 1, 2, 3, 4, 5 and the hits sit at ranks 2 (item 2) and 4 (item 4).
    #   recall@1 = 0 / min(1, 2) = 0         recall@2 = 1 / 2        recall@3 = 1 / 2
    #   recall@5 = 2 / 2 = 1                 recall@10 = 2 / min(10, 2) = 1
    #   ndcg@1 = 0 / (1 / log2 2) = 0
    #   ndcg@2 = (1 / log2 3) / (1 / log2 2 + 1 / log2 3)                        ~ 0.3869
    #   ndcg@5 = (1 / log2 3 + 1 / log2 5) / (1 / log2 2 + 1 / log2 3)          ~ 0.6509
    #   ndcg@10 = ndcg@5 (no hit beyond rank 4, ideal still over min(10, 2) = 2 positions)
    heldout = heldout_from_sets([{0}], [{2, 4}], 6)
    scores = np.array([[10.0, 5, 4, 3, 2, 1]])
    names = [
        "recall@1",
        "recall@2",
        "recall@3",
        "recall@5",
        "recall@10",
        "ndcg@1",
        "ndcg@2",
        "ndcg@5",
        "ndcg@10",
    ]
    ev = evaluate(lambda x: scores, heldout, metrics=names)
    got = {m: float(v[0]) for m, v in ev.per_user.items()}
    idcg2 = 1.0 + 1.0 / math.log2(3)
    assert got["recall@1"] == 0.0
    assert got["recall@2"] == pytest.approx(0.5)
    assert got["recall@3"] == pytest.approx(0.5)
    assert got["recall@5"] == pytest.approx(1.0)
    assert got["recall@10"] == pytest.approx(1.0)
    assert got["ndcg@1"] == 0.0
    assert got["ndcg@2"] == pytest.approx((1 / math.log2(3)) / idcg2)
    assert got["ndcg@5"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / idcg2)
    assert got["ndcg@10"] == pytest.approx(got["ndcg@5"])
    assert ev.n_users == 1 and ev.n_excluded == 0
    assert ev.n_interactions.tolist() == [3]
    assert ev.summary()["ndcg@5"]["se"] == 0.0


def test_recall_divides_by_min_k_targets():
    # 3 targets {0, 1, 2}, ranking 0, 1, 2, 3: both top-2 items are hits -> recall@2 = 2 / min(2, 3) = 1
    # (RecBole-style 2 / 3 would be wrong); ndcg@2 = 1. recall@3 = 3/3, ndcg@4 = 1 (ideal over 3 positions).
    topk = np.array([[0, 1, 2, 3]])
    out = ranking_metrics(topk, csr_from_sets([{0, 1, 2}], 5), ["recall@2", "ndcg@2", "recall@3", "ndcg@4"])
    assert out["recall@2"][0] == 1.0
    assert out["ndcg@2"][0] == pytest.approx(1.0)
    assert out["recall@3"][0] == 1.0
    assert out["ndcg@4"][0] == pytest.approx(1.0)


def test_ranking_metrics_padding_and_worst_case():
    # Row 0: targets {1, 3}, hit at rank 1, then padding -> recall@3 = 1 / min(3, 2), ndcg@3 = 1 / IDCG_2.
    # Row 1: target {4} (last column) not listed -> 0. Its lookup key 1 * 5 + 4 = 9 equals row 2's padding
    # query 2 * 5 - 1 = 9, so the padding mask must stop that alias.
    # Row 2: target {3} at rank 3 -> recall@3 = 1, ndcg@3 = (1 / log2 4) / 1 = 0.5, recall@1 = 0.
    topk = np.array([[1, -1, -1], [0, 1, 2], [-1, 2, 3]])
    targ = csr_from_sets([{1, 3}, {4}, {3}], 5)
    out = ranking_metrics(topk, targ, ["recall@3", "ndcg@3", "recall@1"])
    assert out["recall@3"].tolist() == [0.5, 0.0, 1.0]
    assert out["ndcg@3"][0] == pytest.approx(1.0 / (1.0 + 1.0 / math.log2(3)))
    assert out["ndcg@3"][1] == 0.0
    assert out["ndcg@3"][2] == pytest.approx(0.5)
    assert out["recall@1"].tolist() == [1.0, 0.0, 0.0]


def test_k_larger_than_n_items():
    # 4 items, fold-in {3}, targets {0, 2}: only 3 rankable items; K = 100 > n_items is allowed.
    heldout = heldout_from_sets([{3}], [{0, 2}], 4)
    scores = np.array([[0.1, 0.4, 0.3, 9.0]])  # ranking 1, 2, 0 -> hits at ranks 2 and 3
    ev = evaluate(lambda x: scores, heldout, metrics=("recall@100", "ndcg@100"))
    assert ev.per_user["recall@100"][0] == 1.0
    expected = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ev.per_user["ndcg@100"][0] == pytest.approx(expected)


def test_unsorted_and_duplicate_target_entries_are_canonicalised():
    # targets given with unsorted indices and a duplicate (row 0: 3, 1, 3): the targets are {1, 3}.
    targ = sp.csr_matrix((np.ones(3), np.array([3, 1, 3]), np.array([0, 3])), shape=(1, 5))
    assert not targ.has_canonical_format
    out = ranking_metrics(np.array([[3, 0]]), targ, ["recall@2"])
    assert out["recall@2"][0] == pytest.approx(0.5)


# ----------------------------------------------------------------------------------- brute-force property
@settings(max_examples=40, deadline=None)
@given(
    n_users=st.integers(1, 25),
    n_items=st.integers(2, 40),
    batch_size=st.integers(1, 7),
    ks=st.lists(st.integers(1, 45), min_size=1, max_size=3, unique=True),
    as_tensor=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_evaluate_matches_brute_force(n_users, n_items, batch_size, ks, as_tensor, seed):
    rng = np.random.default_rng(seed)
    fold, targ = [], []
    for _ in range(n_users):
        perm = rng.permutation(n_items)
        n_f = int(rng.integers(0, n_items))
        n_t = int(rng.integers(0, n_items - n_f + 1))  # 0 targets possible: user must be excluded
        fold.append(set(perm[:n_f].tolist()))
        targ.append(set(perm[n_f : n_f + n_t].tolist()))
    heldout = heldout_from_sets(fold, targ, n_items)
    weights = rng.normal(size=(n_items, n_items))
    # Fold-in items get a large score boost, so any failure to mask them would put them in the top-k.
    weights[np.arange(n_items), np.arange(n_items)] += 100.0
    scorer = LinearScorer(weights, rng.normal(size=n_items), as_tensor=as_tensor)
    metrics = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")]

    has_t = np.array([len(t) > 0 for t in targ])
    if not has_t.any():
        with pytest.raises(ValueError, match="no held-out user has targets"):
            evaluate(scorer, heldout, metrics=metrics, batch_size=batch_size)
        return
    ev = evaluate(scorer, heldout, metrics=metrics, batch_size=batch_size)

    all_scores = np.asarray(heldout.fold_in @ weights) + scorer.bias
    ref = brute_force(all_scores, heldout.fold_in, heldout.targets, ks)
    for name in metrics:
        np.testing.assert_allclose(ev.per_user[name], ref[name], rtol=1e-12, atol=1e-12)
        assert np.all((ev.per_user[name] >= 0) & (ev.per_user[name] <= 1))
    # only users with targets are scored, in batches of at most batch_size
    assert sum(b.shape[0] for b in scorer.batches) == int(has_t.sum())
    assert max(b.shape[0] for b in scorer.batches) <= batch_size
    assert len(scorer.batches) == math.ceil(has_t.sum() / batch_size)
    np.testing.assert_array_equal(ev.rows, np.flatnonzero(has_t))
    assert ev.n_excluded == int((~has_t).sum()) and ev.n_users == n_users
    np.testing.assert_array_equal(ev.n_interactions, [len(f) + len(t) for f, t in zip(fold, targ, strict=True) if t])
    json.dumps(ev.to_dict(), allow_nan=False)  # no NaN anywhere


@settings(max_examples=40, deadline=None)
@given(
    n_rows=st.integers(1, 10),
    n_items=st.integers(1, 30),
    k_frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_top_k_never_returns_fold_in(n_rows, n_items, k_frac, seed):
    rng = np.random.default_rng(seed)
    k = max(1, round(k_frac * n_items))
    fold = [set(rng.choice(n_items, int(rng.integers(0, n_items + 1)), replace=False).tolist()) for _ in range(n_rows)]
    fold_csr = csr_from_sets(fold, n_items)
    scores = rng.normal(size=(n_rows, n_items)) + 50.0 * fold_csr.toarray()
    before = scores.copy()
    topk = top_k_items(scores, fold_csr, k)
    np.testing.assert_array_equal(scores, before)  # the caller's array is not masked in place
    assert topk.shape == (n_rows, k)
    for u in range(n_rows):
        items = topk[u]
        real = items[items >= 0]
        assert not set(real.tolist()) & fold[u]
        # padding only when fewer than k items are rankable, and only at the tail
        assert real.size == min(k, n_items - len(fold[u]))
        assert np.all(items[real.size :] == -1)
        # best first, and exactly the best non-fold-in items
        free = np.array(sorted(set(range(n_items)) - fold[u]), dtype=np.int64)
        best = free[np.argsort(-scores[u, free], kind="stable")][: real.size]
        np.testing.assert_array_equal(real, best)


# ------------------------------------------------------------------------------- exclusion and counting
def test_users_without_targets_excluded_and_counted():
    # user 1 and 3 have no targets (one of them has no fold-in either): not scored, counted, no NaN
    heldout = heldout_from_sets([{0}, {1, 2}, {3}, set()], [{1}, set(), {0, 2}, set()], 5)
    calls = []

    def score_fn(x):
        calls.append(x.shape[0])
        return np.tile(np.arange(5, 0, -1, dtype=np.float32), (x.shape[0], 1))  # ranking 0 > 1 > 2 > 3 > 4

    ev = evaluate(score_fn, heldout, metrics=["recall@1", "ndcg@2"])
    assert calls == [2]
    assert ev.rows.tolist() == [0, 2] and ev.n_users == 4 and ev.n_excluded == 2
    # user 0: fold-in {0}, ranking 1, 2, ... -> hit at rank 1
    # user 2: fold-in {3}, ranking 0, 1, 2, ... -> hits at ranks 1 and 3
    assert ev.per_user["recall@1"].tolist() == [1.0, 1.0]
    assert ev.per_user["ndcg@2"][1] == pytest.approx(1.0 / (1.0 + 1.0 / math.log2(3)))
    again = evaluate(score_fn, heldout, metrics=["recall@1", "ndcg@2"], device="cpu", progress=True)
    for name in ev.metrics:
        np.testing.assert_array_equal(again.per_user[name], ev.per_user[name])
    d = ev.to_dict()
    assert d["n_users"] == 4 and d["n_excluded_no_targets"] == 2
    assert d["recall@1"] == {"mean": 1.0, "se": 0.0, "n": 2}
    json.dumps(d, allow_nan=False)


def test_all_users_without_targets_raise():
    heldout = heldout_from_sets([{0}, {1}], [set(), set()], 3)
    with pytest.raises(ValueError, match="no held-out user has targets"):
        evaluate(lambda x: np.zeros((x.shape[0], 3)), heldout)
    empty = make_evaluation({"recall@20": []}, [], [], n_users=2)
    with pytest.raises(ValueError, match="no held-out user has targets"):
        empty.summary()


# ------------------------------------------------------------------------------------- summaries, groups
def test_summary_standard_error_formula():
    vals = [0.0, 1.0, 0.5, 0.25]
    ev = make_evaluation({"ndcg@100": vals}, [0, 1, 2, 3], [5, 5, 5, 5], n_users=4)
    s = ev.summary()["ndcg@100"]
    # mean 0.4375; squared deviations sum to 0.546875; sample variance 0.546875 / 3; se = sqrt(var) / sqrt(4)
    assert s["n"] == 4
    assert s["mean"] == pytest.approx(0.4375)
    assert s["se"] == pytest.approx(math.sqrt(0.546875 / 3) / 2)


def test_group_boundaries():
    # n_interactions (fold-in + targets): 4 (no group), 5, 10 | 11, 50 | 51, 100 | 101, 300
    sizes = [4, 5, 10, 11, 50, 51, 100, 101, 300]
    n_items = 310
    fold = [set(range(1, n)) for n in sizes]  # n - 1 fold-in items and target {0}
    targ = [{0} for _ in sizes]
    heldout = heldout_from_sets(fold, targ, n_items)
    rng = np.random.default_rng(0)
    bias = rng.normal(size=n_items)
    ev = evaluate(lambda x: np.tile(bias, (x.shape[0], 1)), heldout, metrics=["ndcg@100"], batch_size=4)
    np.testing.assert_array_equal(ev.n_interactions, sizes)
    groups = ev.groups()
    assert list(groups) == [label for label, _, _ in USER_GROUPS]
    expected_members = {"[5-10]": [1, 2], "[11-50]": [3, 4], "[51-100]": [5, 6], "[100+]": [7, 8]}
    for label, members in expected_members.items():
        g = groups[label]["ndcg@100"]
        assert g["n"] == 2
        assert g["mean"] == pytest.approx(np.mean(ev.per_user["ndcg@100"][members]))
        assert g["se"] == pytest.approx(np.std(ev.per_user["ndcg@100"][members], ddof=1) / math.sqrt(2))
    assert ev.n_outside_groups() == 1
    d = ev.to_dict()
    assert d["n_outside_groups"] == 1 and d["groups"]["[100+]"]["ndcg@100"]["n"] == 2
    table = ev.format_table()
    assert "[51-100]" in table and "±" in table and "1 evaluated outside every group" in table


def test_empty_group_reports_none_not_nan():
    ev = make_evaluation({"recall@20": [0.5, 0.25], "ndcg@100": [0.1, 0.3]}, [0, 2], [7, 8], n_users=3)
    d = ev.to_dict()
    assert set(d) >= {"recall@20", "ndcg@100", "n_users", "n_excluded_no_targets", "groups"}
    assert d["groups"]["[11-50]"]["recall@20"] == {"mean": None, "se": None, "n": 0}
    assert d["groups"]["[5-10]"]["ndcg@100"]["mean"] == pytest.approx(0.2)
    assert d["n_excluded_no_targets"] == 1
    json.dumps(d, allow_nan=False)
    lines = ev.format_table().splitlines()
    assert any(line.startswith("[11-50]") and "-" in line.split()[2:] for line in lines)


def test_overlapping_bins_rejected():
    ev = make_evaluation({"recall@20": [0.5]}, [0], [7], n_users=1)
    with pytest.raises(ValueError, match="overlap"):
        ev.groups((("a", 1, 10), ("b", 10, 20)))


# ------------------------------------------------------------------------------------- paired difference
def test_paired_difference_against_manual():
    a = make_evaluation({"ndcg@100": [0.5, 0.6, 0.2, 0.9]}, [0, 1, 2, 4], [5, 6, 7, 8], n_users=6)
    b = make_evaluation({"ndcg@100": [0.4, 0.1, 0.3, 0.7]}, [1, 2, 3, 4], [6, 7, 9, 8], n_users=6)
    # common rows 1, 2, 4: d = 0.6 - 0.4, 0.2 - 0.1, 0.9 - 0.7 = 0.2, 0.1, 0.2
    d = np.array([0.2, 0.1, 0.2])
    out = paired_difference(a, b, "ndcg@100")
    assert out["n"] == 3
    assert out["mean"] == pytest.approx(d.mean())
    assert out["se"] == pytest.approx(math.sqrt(((d - d.mean()) ** 2).sum() / 2) / math.sqrt(3))
    assert paired_difference(a, a, "ndcg@100") == {"mean": 0.0, "se": 0.0, "n": 4}
    with pytest.raises(ValueError, match="missing"):
        paired_difference(a, b, "recall@20")
    other = make_evaluation({"ndcg@100": [0.1]}, [0], [5], n_users=2)
    with pytest.raises(ValueError, match="same HeldOut"):
        paired_difference(a, other, "ndcg@100")


# ------------------------------------------------------------------------------------------ error cases
@pytest.mark.parametrize("name", ["precision@10", "recall", "recall@", "ndcg@1.5", "map@5", "recall@x"])
def test_unknown_metric_raises(name):
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metric(name)


@pytest.mark.parametrize("name", ["recall@0", "ndcg@0", "ndcg@-3"])
def test_k_below_one_raises(name):
    with pytest.raises(ValueError, match="K must be an integer >= 1"):
        parse_metric(name)
    heldout = heldout_from_sets([{0}], [{1}], 3)
    with pytest.raises(ValueError, match="K must be"):
        evaluate(lambda x: np.zeros((1, 3)), heldout, metrics=[name])


def test_parse_metric_any_k_and_case():
    assert parse_metric("recall@10") == ("recall", 10)
    assert parse_metric(" NDCG@7 ") == ("ndcg", 7)


def test_bad_scores_and_inputs_raise():
    heldout = heldout_from_sets([{0}, {1}], [{1}, {2}], 4)
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda x: np.zeros((x.shape[0], 3)), heldout, metrics=["recall@1"])
    with pytest.raises(ValueError, match="NaN"):
        evaluate(lambda x: np.full((x.shape[0], 4), np.nan), heldout, metrics=["recall@1"])
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(lambda x: np.zeros((x.shape[0], 4)), heldout, batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        ranking_metrics(np.array([[0]]), csr_from_sets([set()], 4), ["recall@1"])
    with pytest.raises(ValueError, match="repeats"):
        ranking_metrics(np.array([[1, 1]]), csr_from_sets([{1}], 4), ["recall@2"])
    with pytest.raises(ValueError, match="columns"):
        ranking_metrics(np.array([[1]]), csr_from_sets([{1}], 4), ["recall@2"])


def _brute_beyond(lists, pop, n_train, n_items):
    """The four measures written out with sets and loops."""
    lists = [[i for i in row if i >= 0] for row in lists]
    users = [row for row in lists if row]
    shown = {i for row in lists for i in row}
    counts = sorted(sum(row.count(i) for row in lists) for i in range(n_items))
    total = sum(counts)
    gini = sum((2 * (j + 1) - n_items - 1) * c for j, c in enumerate(counts)) / (n_items * total)
    arp = sum(sum(pop[i] for i in row) / len(row) for row in users) / len(users)
    nov = sum(sum(-math.log2(max(pop[i], 1) / n_train) for i in row) / len(row) for row in users) / len(users)
    return len(shown) / n_items, gini, arp, nov


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.integers(3, 12), st.integers(1, 4), st.integers(0, 10_000))
def test_beyond_accuracy_equals_its_definitions(n_users, n_items, k, seed):
    from models.evaluation import Evaluation

    rng = np.random.default_rng(seed)
    k = min(k, n_items)
    lists = np.stack([rng.permutation(n_items)[:k] for _ in range(n_users)])
    lists[rng.random(lists.shape) < 0.2] = -1  # ranks with no rankable item
    lists = np.sort(lists, axis=1)[:, ::-1].copy()  # padding last, as top_k_items returns it
    pop = rng.integers(0, 20, n_items).astype(float)
    ev = Evaluation(
        per_user={f"recall@{k}": np.zeros(n_users)},
        rows=np.arange(n_users),
        n_interactions=np.full(n_users, 7),
        n_users=n_users,
        n_excluded=0,
        topk=lists,
    )
    out = ev.beyond_accuracy(pop, 25)["all"]
    if not (lists >= 0).any():
        assert out[f"coverage@{k}"] is None
        return
    want = _brute_beyond(lists.tolist(), pop, 25, n_items)
    got = [out[f"{m}@{k}"] for m in ("coverage", "gini", "arp", "novelty")]
    assert got == pytest.approx(want)


def test_beyond_accuracy_extremes_and_groups():
    from models.evaluation import Evaluation

    every_user_same = np.array([[0, 1], [0, 1], [0, 1]])
    ev = Evaluation({"recall@2": np.zeros(3)}, np.arange(3), np.array([7, 30, 30]), 3, 0, topk=every_user_same)
    out = ev.beyond_accuracy(np.array([4.0, 2.0, 1.0, 1.0]), 8)
    assert out["all"]["coverage@2"] == 0.5 and out["all"]["gini@2"] == pytest.approx(0.5)
    assert out["all"]["arp@2"] == 3.0 and out["all"]["novelty@2"] == pytest.approx((1 + 2) / 2)
    assert out["groups"]["[5-10]"]["users"] == 1 and out["groups"]["[11-50]"]["users"] == 2
    assert out["groups"]["[100+]"]["coverage@2"] is None
    spread = Evaluation({"recall@1": np.zeros(4)}, np.arange(4), np.full(4, 7), 4, 0, topk=np.arange(4)[:, None])
    assert spread.beyond_accuracy(np.ones(4), 4)["all"]["gini@1"] == 0.0  # equal exposure
    with pytest.raises(ValueError, match="stored list length"):
        spread.beyond_accuracy(np.ones(8), 4, ks=[2])  # lists of 1 of 8 items: K = 2 was not ranked
    one_item = Evaluation({"recall@1": np.zeros(2)}, np.arange(2), np.full(2, 7), 2, 0, topk=np.zeros((2, 1), int))
    assert one_item.beyond_accuracy(np.ones(1), 2, ks=[100])["all"]["coverage@100"] == 1.0  # K beyond the catalogue


# --------------------------------------------------------------------- input checks at their boundaries
def test_duplicate_target_entries_count_once():
    # Row 0 stores item 1 twice (sorted, not canonical): |T| = 1, so recall@2 = 1 / min(2, 1) = 1 and ndcg@2 = 1.
    # Counting the duplicate would give 1 / 2 and 1 / (1 + 1 / log2 3).
    targ = sp.csr_matrix((np.ones(2), np.array([1, 1]), np.array([0, 2])), shape=(1, 5))
    assert not targ.has_canonical_format
    out = ranking_metrics(np.array([[1, 0]]), targ, ["recall@2", "ndcg@2"])
    assert out["recall@2"][0] == 1.0
    assert out["ndcg@2"][0] == pytest.approx(1.0)


@pytest.mark.parametrize("topk", [np.array([0, 1]), np.array([[0.0, 1.0]])], ids=["one-dimensional", "float"])
def test_topk_items_must_be_a_two_dimensional_integer_array(topk):
    with pytest.raises(ValueError, match="topk_items must be a 2-D integer array"):
        ranking_metrics(topk, csr_from_sets([{1}], 4), ["recall@1"])


def test_a_row_count_mismatch_names_both_counts():
    with pytest.raises(ValueError, match=r"topk_items has 1 rows but targets has 2: pass matching rows"):
        ranking_metrics(np.array([[0]]), csr_from_sets([{1}, {2}], 5), ["recall@1"])


def test_item_indices_stop_at_the_last_column():
    targ = csr_from_sets([{3}, {0}], 4)
    # item 3 (the last column) is an item; item 4 is not, and would alias row 1's item 0 in the key search
    assert ranking_metrics(np.array([[3], [1]]), targ, ["recall@1"])["recall@1"].tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="topk_items holds item 4 but targets has only 4 columns"):
        ranking_metrics(np.array([[4], [1]]), targ, ["recall@1"])


def test_a_repeated_item_zero_is_refused_and_repeated_padding_is_not():
    targ = csr_from_sets([{0}], 4)
    with pytest.raises(ValueError, match="repeats an item within a row"):
        ranking_metrics(np.array([[0, 2, 0]]), targ, ["recall@3"])
    assert ranking_metrics(np.array([[0, -1, -1]]), targ, ["recall@3"])["recall@3"].tolist() == [1.0]


def test_the_message_counts_the_empty_target_rows():
    # rows with 0, 0 and 2 targets: two rows are empty (one row is not, none has exactly one target)
    targ = csr_from_sets([set(), set(), {1, 2}], 4)
    with pytest.raises(ValueError, match=r"^2 rows of targets are empty"):
        ranking_metrics(np.array([[0], [1], [2]]), targ, ["recall@1"])


def test_top_k_items_takes_k_from_one_to_n_items():
    fold = csr_from_sets([{0}], 3)
    scores = np.array([[3.0, 2.0, 1.0]])
    assert top_k_items(scores, fold, 1).tolist() == [[1]]
    assert top_k_items(scores, fold, 3).tolist() == [[1, 2, -1]]
    for k in (0, 4):
        with pytest.raises(ValueError, match=rf"k = {k} must lie in \[1, n_items = 3\]"):
            top_k_items(scores, fold, k)


def test_group_bins_need_distinct_labels_and_may_hold_a_single_length():
    ev = make_evaluation({"recall@20": [0.5, 1.0, 0.0]}, [0, 1, 2], [5, 5, 6], n_users=3)
    # (label, 5, 5) holds exactly the users with 5 interactions
    five = ev.groups((("five", 5, 5),))["five"]["recall@20"]
    assert five == {"mean": 0.75, "se": pytest.approx(0.25), "n": 2}
    with pytest.raises(ValueError, match=r"group 'down' has low 6 > high 5"):
        ev.groups((("down", 6, 5),))
    with pytest.raises(ValueError, match=r"group labels must be distinct, got \['a', 'a'\]"):
        ev.groups((("a", 1, 5), ("a", 6, 10)))


def test_evaluations_are_frozen_and_compared_by_identity():
    ev = make_evaluation({"recall@20": [0.5]}, [0], [7], n_users=1)
    same_values = make_evaluation({"recall@20": [0.5]}, [0], [7], n_users=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.n_users = 2
    # eq=False: no field-wise == over numpy arrays (ambiguous for longer arrays); identity, and usable as a key
    assert ev == ev and ev != same_values
    assert {ev: "a", same_values: "b"}[ev] == "a"


def test_evaluation_checks_its_arrays_when_built():
    ok = {
        "per_user": {"recall@20": np.array([0.5, 0.2])},
        "rows": np.array([0, 1]),
        "n_interactions": np.array([5, 6]),
        "n_users": 2,
        "n_excluded": 0,
    }
    assert Evaluation(**ok, topk=np.zeros((2, 1), dtype=np.int64)).n_evaluated == 2
    assert Evaluation(**{**ok, "rows": np.array([3, 7])}).rows.tolist() == [3, 7]
    with pytest.raises(ValueError, match="one entry per evaluated user"):
        Evaluation(**{**ok, "n_interactions": np.array([5])})
    with pytest.raises(ValueError, match="one entry per evaluated user"):
        Evaluation(**{**ok, "per_user": {"recall@20": np.array([0.5])}})
    with pytest.raises(ValueError, match="rows must be strictly increasing"):
        Evaluation(**{**ok, "rows": np.array([1, 1])})
    with pytest.raises(ValueError, match="unknown metric 'precision@5'"):
        Evaluation(**{**ok, "per_user": {"precision@5": np.array([0.5, 0.2])}})
    with pytest.raises(ValueError, match=r"topk has shape \(3, 1\); expected one row per evaluated user \(2\)"):
        Evaluation(**ok, topk=np.zeros((3, 1), dtype=np.int64))


def test_per_user_table_lists_each_evaluated_user_with_its_group():
    ev = make_evaluation({"recall@20": [0.5, 1.0, 0.0], "ndcg@100": [0.25, 0.75, 0.0]}, [0, 2, 3], [7, 60, 3], 4)
    table = ev.per_user_table(np.array([101, 102, 103, 104]))
    assert table.columns.tolist() == ["user", "n_interactions", "group", "recall@20", "ndcg@100"]
    assert table["user"].tolist() == [101, 103, 104]
    assert table["n_interactions"].tolist() == [7, 60, 3]
    assert table["group"].tolist() == ["[5-10]", "[51-100]", ""]
    assert table["ndcg@100"].tolist() == [0.25, 0.75, 0.0]
    with pytest.raises(ValueError, match=r"users has shape \(3,\), expected \(4,\)"):
        ev.per_user_table(np.array([101, 102, 103]))


def test_beyond_accuracy_needs_one_training_user_and_accepts_one():
    ev = Evaluation({"recall@1": np.zeros(2)}, np.arange(2), np.full(2, 7), 2, 0, topk=np.array([[0], [1]]))
    pop = np.array([1.0, 1.0])
    assert ev.beyond_accuracy(pop, 1)["all"]["novelty@1"] == 0.0  # -log2(1 / 1)
    with pytest.raises(ValueError, match="n_train_users must be >= 1, got 0"):
        ev.beyond_accuracy(pop, 0)


def test_beyond_accuracy_of_a_one_item_catalogue_with_a_user_who_got_no_item():
    # One item; user 1's list is [-1] (evaluate_rows pads with -1 when the only item is scored -inf).
    ev = Evaluation({"recall@1": np.zeros(2)}, np.arange(2), np.full(2, 7), 2, 0, topk=np.array([[0], [-1]]))
    out = ev.beyond_accuracy(np.array([3.0]), 4)["all"]
    want = {"users": 2, "coverage@1": 1.0, "gini@1": 0.0, "arp@1": 3.0, "novelty@1": pytest.approx(-math.log2(3 / 4))}
    assert out == want


def test_format_table_layout():
    ev = make_evaluation({"recall@20": [0.5, 0.25], "ndcg@100": [1.0, 0.5]}, [0, 1], [5, 20], n_users=3)
    bins = (("few", 5, 10), ("many", 11, 50), ("none", 100, 200))
    # label column max(5, longest label) wide; cells mean ± se with 4 digits, right-aligned in 2 * 4 + 7 = 15
    expected = [
        "group       n        recall@20         ndcg@100",
        "-----------------------------------------------",
        "all         2  0.3750 ± 0.1250  0.7500 ± 0.2500",
        "few         1  0.5000 ± 0.0000  1.0000 ± 0.0000",
        "many        1  0.2500 ± 0.0000  0.5000 ± 0.0000",
        "none        0                -                -",
        "3 held-out users: 2 evaluated, 1 excluded (no targets), 0 evaluated outside every group",
    ]
    assert ev.format_table(bins).splitlines() == expected


def test_the_default_batch_is_1000_users():
    n = 1001
    heldout = heldout_from_sets([set()] * n, [{0}] * n, 2)
    sizes = []

    def score_fn(fold_batch):
        sizes.append(fold_batch.shape[0])
        return np.zeros((fold_batch.shape[0], 2))

    evaluate(score_fn, heldout, metrics=["recall@1"])
    evaluate_rows(lambda rows, fold_batch: score_fn(fold_batch), heldout, metrics=["recall@1"])
    assert sizes == [1000, 1, 1000, 1]


def test_paired_difference_of_one_common_user_and_of_none():
    a = make_evaluation({"ndcg@100": [0.5, 0.6]}, [0, 1], [5, 6], n_users=3)
    b = make_evaluation({"ndcg@100": [0.4, 0.1]}, [1, 2], [6, 7], n_users=3)
    # only row 1 is in both: d = 0.6 - 0.4
    assert paired_difference(a, b, "ndcg@100") == {"mean": pytest.approx(0.2), "se": 0.0, "n": 1}
    first = make_evaluation({"ndcg@100": [0.5]}, [0], [5], n_users=3)
    with pytest.raises(ValueError, match="no held-out user is evaluated in both"):
        paired_difference(first, b, "ndcg@100")

"""Tests of the synthetic dataset: determinism, sampling law, planted structure, far-but-related pairs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from models.synthetic import FAR_MAX_SHARED, MIN_ACTIVITY, SyntheticData, _smallest_k, make_synthetic

# No cluster capacity binds here (0.85 * 180 < 200 in-cluster items; planted half-clusters hold 100 >= 51),
# so the in-cluster count of every user is exactly Binomial(n_u, affinity).
UNCAPPED = dict(n_users=900, n_items=600, n_groups=3, cohort_activity=(5, 50, 150), n_far_related_pairs=30)


@pytest.fixture(scope="module")
def default() -> SyntheticData:
    return make_synthetic(seed=3)


@pytest.fixture(scope="module")
def small() -> SyntheticData:
    return make_synthetic(**UNCAPPED, seed=1)


def _fields(d: SyntheticData) -> dict:
    return {
        "users": d.users,
        "items": d.items,
        "taste_group": d.taste_group,
        "cohort": d.cohort,
        "item_cluster": d.item_cluster,
        "item_rank": d.item_rank,
        "far_related_pairs": d.far_related_pairs,
        "far_half": d.far_half,
    }


def _in_cluster(d: SyntheticData) -> np.ndarray:
    return d.item_cluster[d.items] == d.taste_group[d.users]


# ---------------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_data(small):
    again = make_synthetic(**UNCAPPED, seed=1)
    for name, array in _fields(small).items():
        np.testing.assert_array_equal(getattr(again, name), array, err_msg=name)
    assert again.far_threshold == small.far_threshold
    assert again.cohort_activity == small.cohort_activity


def test_different_seed_gives_different_data(small):
    other = make_synthetic(**UNCAPPED, seed=2)
    assert not np.array_equal(other.taste_group, small.taste_group)
    assert other.users.shape != small.users.shape or not np.array_equal(other.items, small.items)
    assert not np.array_equal(other.far_related_pairs, small.far_related_pairs)


# -------------------------------------------------------------------------------------- format and integrity


def test_interaction_list_is_sorted_unique_and_in_range(default):
    d = default
    assert d.users.dtype == np.int64 and d.items.dtype == np.int64
    assert d.users.min() >= 0 and d.users.max() < d.n_users
    assert d.items.min() >= 0 and d.items.max() < d.n_items
    key = d.users * d.n_items + d.items
    assert np.all(np.diff(key) > 0), "not sorted by (user, item) or duplicate pairs"
    n = d.n_interactions
    assert n.min() >= MIN_ACTIVITY and n.max() <= d.n_items


def test_matrix_matches_interaction_list(small):
    x = small.matrix()
    assert isinstance(x, sp.csr_matrix)
    assert x.shape == (small.n_users, small.n_items)
    assert x.dtype == np.float32 and x.indices.dtype == np.int32 and x.indptr.dtype == np.int32
    np.testing.assert_array_equal(x.data, 1.0)
    coo = sp.coo_matrix((np.ones(small.users.size), (small.users, small.items)), shape=x.shape)
    assert (x != coo.tocsr()).nnz == 0
    assert x.nnz == small.users.size  # coo would have summed duplicates into 2s


def test_arrays_are_read_only(small):
    with pytest.raises(ValueError, match="read-only"):
        small.items[0] = 1
    with pytest.raises(ValueError, match="read-only"):
        small.taste_group[0] = 1


def test_item_clusters_are_contiguous_and_balanced(default):
    sizes = np.bincount(default.item_cluster)
    assert sizes.size == 6 and sizes.max() - sizes.min() <= 1
    assert np.all(np.diff(default.item_cluster) >= 0)
    for g in range(6):
        ranks = np.sort(default.item_rank[default.item_cluster == g])
        np.testing.assert_array_equal(ranks, np.arange(1, sizes[g] + 1))


def test_cohort_counts_and_group_balance(default):
    counts = np.bincount(default.cohort, minlength=3)
    np.testing.assert_array_equal(counts, [1200, 1200, 600])
    for c in range(3):
        per_group = np.bincount(default.taste_group[default.cohort == c], minlength=6)
        assert per_group.max() - per_group.min() <= 1


# ------------------------------------------------------------------------------------------ planted structure


def test_cohort_mean_activity_is_close_to_target(default):
    n = default.n_interactions
    for c, target in enumerate(default.cohort_activity):
        mean = n[default.cohort == c].mean()
        assert abs(mean - target) <= 0.15 * target, (c, mean, target)
    # The cohorts are very different: the jittered ranges do not even overlap.
    assert n[default.cohort == 0].max() < n[default.cohort == 1].min()
    assert n[default.cohort == 1].max() < n[default.cohort == 2].min()


@pytest.mark.parametrize("affinity", [0.3, 0.85])
def test_in_cluster_fraction_matches_affinity(affinity):
    d = make_synthetic(**UNCAPPED, affinity=affinity, seed=5)
    inside = _in_cluster(d)
    # Sum of independent Binomial(n_u, affinity): 5 standard errors of the pooled fraction.
    tol = 5 * np.sqrt(affinity * (1 - affinity) / inside.size)
    assert abs(inside.mean() - affinity) < tol, (inside.mean(), affinity, tol)
    per_user = np.bincount(d.users, weights=inside, minlength=d.n_users) / d.n_interactions
    assert abs(per_user[d.cohort == 1].mean() - affinity) < 5 * np.sqrt(affinity * (1 - affinity) / 300 / 50)


@pytest.mark.parametrize("affinity", [0.0, 1.0])
def test_extreme_affinity_is_exact(affinity):
    d = make_synthetic(**UNCAPPED, affinity=affinity, seed=2)
    assert _in_cluster(d).mean() == affinity


def test_small_cluster_is_taken_whole_and_excess_goes_outside(default):
    # 350 x 0.85 items do not fit in a 200-item cluster: heavy users hold (almost always) all of it.
    inside = np.bincount(default.users, weights=_in_cluster(default), minlength=default.n_users)
    size = np.bincount(default.item_cluster)[default.taste_group]
    assert np.all(inside <= size)
    heavy = default.cohort == 2
    assert np.mean(inside[heavy] == size[heavy]) > 0.99


def test_same_group_users_share_more_items_than_other_users(default):
    x = default.matrix()
    rng = np.random.default_rng(0)
    u, v = rng.integers(0, default.n_users, size=(2, 40000))
    keep = u != v
    u, v = u[keep], v[keep]
    shared = np.asarray(x[u].multiply(x[v]).sum(axis=1)).ravel()
    same = default.taste_group[u] == default.taste_group[v]
    assert shared[same].mean() > 2 * shared[~same].mean(), (shared[same].mean(), shared[~same].mean())
    # Within every cohort too, so the effect is taste and not activity.
    for c in range(3):
        both = (default.cohort[u] == c) & (default.cohort[v] == c)
        assert shared[both & same].mean() > 2 * shared[both & ~same].mean(), c


def test_popularity_is_skewed_and_grows_with_the_exponent():
    def top_decile_share(exponent: float) -> float:
        d = make_synthetic(**UNCAPPED, popularity_exponent=exponent, seed=4)
        counts = np.sort(np.bincount(d.items, minlength=d.n_items))[::-1]
        return counts[: d.n_items // 10].sum() / counts.sum()

    shares = [top_decile_share(s) for s in (0.0, 1.0, 2.0)]
    assert shares[1] > 0.2, shares  # 10% of the items hold clearly more than 10% of the interactions
    assert shares[0] < shares[1] < shares[2], shares


def test_most_popular_item_of_a_cluster_is_rank_one(default):
    counts = np.bincount(default.items, minlength=default.n_items)
    for g in range(6):
        members = np.flatnonzero(default.item_cluster == g)
        top = members[np.argmax(counts[members])]
        assert default.item_rank[top] <= 2


# ------------------------------------------------------------------------------------ far-but-related pairs


def _median_same_group_distance_dense(d: SyntheticData) -> float:
    """Independent of the library: dense per-group Gram matrices and numpy.median."""
    x = d.matrix()
    distances = []
    for g in np.unique(d.taste_group):
        xg = x[d.taste_group == g].toarray().astype(np.int64)
        n = xg.sum(axis=1)
        dist = n[:, None] + n[None, :] - 2 * (xg @ xg.T)
        distances.append(dist[np.triu_indices(n.size, k=1)])
    return float(np.median(np.concatenate(distances)))


@pytest.mark.parametrize("name", ["default", "small"])
def test_far_related_pairs_satisfy_the_documented_criterion(name, request):
    d = request.getfixturevalue(name)
    assert d.far_threshold == _median_same_group_distance_dense(d)
    pairs = d.far_related_pairs
    expected = 200 if name == "default" else UNCAPPED["n_far_related_pairs"]
    assert pairs.shape == (expected, 2) and pairs.dtype == np.int64
    assert np.all(pairs[:, 0] < pairs[:, 1])
    assert np.unique(pairs, axis=0).shape[0] == expected
    histories = np.split(d.items, np.cumsum(d.n_interactions)[:-1])
    for u, v in pairs:
        su, sv = set(histories[u].tolist()), set(histories[v].tolist())
        assert d.taste_group[u] == d.taste_group[v]
        assert d.cohort[u] == d.cohort[v]
        assert len(su & sv) <= FAR_MAX_SHARED
        assert len(su ^ sv) > d.far_threshold
    # Spread over all taste groups, not piled into one.
    assert np.unique(d.taste_group[pairs[:, 0]]).size == np.unique(d.taste_group).size


def test_planted_users_keep_to_their_half_and_their_taste(small):
    restricted = small.far_half >= 0
    assert restricted.any()
    item_half = (small.item_rank - 1) % 2
    np.testing.assert_array_equal(
        item_half[small.items][restricted[small.users]], small.far_half[small.users][restricted[small.users]]
    )
    # The pairs are related: their in-cluster fraction is still about the affinity.
    inside = _in_cluster(small)[restricted[small.users]]
    assert abs(inside.mean() - 0.85) < 5 * np.sqrt(0.85 * 0.15 / inside.size)


def test_no_pairs_requested_plants_nothing():
    d = make_synthetic(**{**UNCAPPED, "n_far_related_pairs": 0}, seed=0)
    assert d.far_related_pairs.shape == (0, 2)
    assert np.all(d.far_half == -1)


def test_too_many_pairs_is_a_clear_error():
    with pytest.raises(ValueError, match="far-but-related"):
        make_synthetic(n_users=60, n_items=200, n_groups=3, cohort_activity=(5, 50, 100), n_far_related_pairs=500)


# ----------------------------------------------------------------------------------------------- the sampler


def _exact_inclusion(w: np.ndarray, k: int) -> np.ndarray:
    """Inclusion probabilities of successive sampling, by enumerating all ordered k-draws."""
    total = np.zeros(w.size)
    for seq in itertools.permutations(range(w.size), k):
        p, left = 1.0, w.sum()
        for i in seq:
            p *= w[i] / left
            left -= w[i]
        total[list(seq)] += p
    return total


def test_exponential_race_is_successive_sampling():
    w = np.arange(1, 7, dtype=float) ** -1.5
    k, m = 3, 40000
    rng = np.random.default_rng(11)
    keys = rng.standard_exponential(size=(m, w.size)) / w
    rows, cols = _smallest_k(keys, np.full(m, k))
    assert np.all(np.bincount(rows, minlength=m) == k)
    assert np.all(np.diff(np.sort(cols.reshape(m, k), axis=1), axis=1) > 0)  # distinct inside a row
    freq = np.bincount(cols, minlength=w.size) / m
    exact = _exact_inclusion(w, k)
    np.testing.assert_allclose(freq, exact, atol=5 * np.sqrt(0.25 / m))
    # numpy's own weighted sampling without replacement follows the same law.
    draws = np.stack([rng.choice(w.size, k, replace=False, p=w / w.sum()) for _ in range(5000)])
    np.testing.assert_allclose(
        np.bincount(draws.ravel(), minlength=w.size) / 5000, exact, atol=5 * np.sqrt(0.25 / 5000)
    )


def test_smallest_k_handles_variable_k_and_excluded_columns():
    keys = np.array([[3.0, np.inf, 1.0, 2.0], [0.5, 0.1, np.inf, 0.2], [1.0, 2.0, 3.0, 4.0]])
    rows, cols = _smallest_k(keys, np.array([3, 1, 0]))
    np.testing.assert_array_equal(rows, [0, 0, 0, 1])
    np.testing.assert_array_equal(cols, [2, 3, 0, 1])


# --------------------------------------------------------------------------------------------------- labels


def test_labels_for_follows_the_given_order(small):
    ids = np.random.default_rng(0).permutation(small.n_users)[:50]
    labels = small.labels_for(ids)
    np.testing.assert_array_equal(labels["taste_group"], small.taste_group[ids])
    np.testing.assert_array_equal(labels["cohort"], small.cohort[ids])
    np.testing.assert_array_equal(labels["n_interactions"], np.diff(small.matrix().indptr)[ids])
    np.testing.assert_array_equal(labels["target_activity"], np.array(small.cohort_activity)[small.cohort[ids]])
    np.testing.assert_array_equal(labels["far_half"], small.far_half[ids])


@pytest.mark.parametrize("bad", [[-1], [10**6], [[0, 1]], [0.5]])
def test_labels_for_rejects_bad_ids(small, bad):
    with pytest.raises(ValueError, match="user_ids"):
        small.labels_for(bad)


# ------------------------------------------------------------------------------------------ parameter errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cohort_shares": (0.5, 0.4, 0.2)}, "sum to 1"),
        ({"cohort_shares": (0.5, 0.5)}, "one share per cohort"),
        ({"cohort_shares": (1.2, -0.2, 0.0)}, "non-negative"),
        ({"cohort_activity": (4, 50, 350)}, "cohort_activity"),
        ({"cohort_activity": (5, 50, 2000)}, "cohort_activity"),
        ({"cohort_activity": (5.5, 50, 350)}, "integers"),
        ({"cohort_activity": ()}, "non-empty"),
        ({"affinity": 1.5}, "affinity"),
        ({"affinity": -0.1}, "affinity"),
        ({"affinity": float("nan")}, "affinity"),
        ({"n_groups": 1201}, "n_groups"),
        ({"n_groups": 0}, "n_groups"),
        ({"n_users": 0}, "n_users"),
        ({"n_items": 4, "cohort_activity": (5,), "cohort_shares": (1.0,)}, "n_items"),
        ({"popularity_exponent": -1.0}, "popularity_exponent"),
        ({"popularity_exponent": 1e3}, "popularity_exponent"),
        ({"cohort_shares": 1.0}, "one share per cohort"),
        ({"n_far_related_pairs": -1}, "n_far_related_pairs"),
        ({"seed": -3}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"activity_jitter": 1.0}, "activity_jitter"),
    ],
)
def test_bad_parameters_raise_one_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic(**kwargs)


# ------------------------------------------------------------------------------------- property-based check


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_users=st.integers(1, 120),
    n_items=st.integers(5, 90),
    n_groups=st.integers(1, 5),
    activity=st.lists(st.integers(5, 90), min_size=1, max_size=3),
    affinity=st.floats(0, 1),
    exponent=st.floats(0, 3),
    jitter=st.floats(0, 0.5),
    n_pairs=st.integers(0, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_invariants_hold_for_any_valid_parameters(
    n_users, n_items, n_groups, activity, affinity, exponent, jitter, n_pairs, seed
):
    activity = [min(a, n_items) for a in activity]
    n_groups = min(n_groups, n_items)
    shares = np.full(len(activity), 1.0 / len(activity))
    try:
        d = make_synthetic(n_users, n_items, n_groups, activity, shares, affinity, exponent, n_pairs, seed, jitter)
    except ValueError as error:
        assert "far-but-related" in str(error)
        assume(False)
    key = d.users * n_items + d.items
    assert np.all(np.diff(key) > 0)
    n = d.n_interactions
    assert n.min() >= MIN_ACTIVITY and n.max() <= n_items
    target = np.asarray(activity)[d.cohort]
    assert np.all(n <= np.maximum(np.rint(target * (1 + jitter)), MIN_ACTIVITY) + 1e-9)
    inside = np.bincount(d.users, weights=_in_cluster(d), minlength=n_users)
    assert np.all(inside <= np.bincount(d.item_cluster, minlength=n_groups)[d.taste_group])
    counts = np.bincount(d.cohort, minlength=len(activity))
    assert counts.sum() == n_users and np.all(np.abs(counts - shares * n_users) < 1)
    assert d.far_related_pairs.shape == (n_pairs, 2)
    x = d.matrix()
    for u, v in d.far_related_pairs:
        shared = x[u].multiply(x[v]).sum()
        assert d.taste_group[u] == d.taste_group[v]
        assert shared <= FAR_MAX_SHARED and n[u] + n[v] - 2 * shared > d.far_threshold


def test_null_synthetic_plants_nothing():
    from models.synthetic import make_null_synthetic

    data = make_null_synthetic()
    assert np.unique(data.taste_group).size == 1 and np.unique(data.cohort).size == 1
    assert data.far_related_pairs.shape == (0, 2)
    n = data.n_interactions
    assert n.min() >= 40 and n.max() <= 60
    # uniform popularity: item degrees are hypergeometric-like around the mean, no Zipf head
    degree = np.bincount(data.items, minlength=data.n_items)
    assert degree.max() < 2 * degree.mean()
    # a planted dataset of the same size does have a popular head
    planted = np.bincount(make_synthetic().items, minlength=data.n_items)
    assert planted.max() > 4 * planted.mean()


def test_null_synthetic_is_a_dataset():
    from models.data import load_split

    split = load_split("synthetic-null")
    assert split.train.shape[1] == 1200 and split.name == "synthetic-null"

"""Cohort probes: calibrated on a null (labels unrelated to codes), powerful on planted clusters, paired."""

from __future__ import annotations

import numpy as np
import pytest

from geometry.probes import paired_accuracy_difference, probe_accuracy


def _clusters(n_per: int, shift: float, d: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(3), n_per)
    centres = np.zeros((3, d))
    centres[np.arange(3), np.arange(3)] = shift
    return centres[labels] + rng.standard_normal((labels.size, d)), labels


@pytest.mark.parametrize("probe", ["knn", "logistic"])
def test_planted_clusters_are_separated(probe):
    Z, y = _clusters(40, 4.0, 8, np.random.default_rng(0))
    r = probe_accuracy(Z, y, probe=probe, n_permutations=19, rng=1)
    assert r.verdict == "separated" and r.p_value == pytest.approx(1 / 20)
    assert r.accuracy > 0.9 and r.ci[0] > r.chance == pytest.approx(1 / 3)
    assert r.correct.shape == (120,) and r.correct.mean() == r.accuracy


def test_null_labels_are_separated_at_most_at_the_stated_rate():
    """200 data sets with labels drawn independently of the codes: 'separated' at rate <= alpha (0.05), up to
    binomial error (the 99th percentile of Binomial(200, 0.05) is 18)."""
    rng = np.random.default_rng(2)
    verdicts, accuracies = [], []
    for _ in range(200):
        Z = rng.standard_normal((60, 5))
        y = rng.permutation(np.repeat(np.arange(3), 20))
        r = probe_accuracy(Z, y, probe="knn", k=5, n_permutations=19, rng=rng)
        verdicts.append(r.verdict == "separated")
        accuracies.append(r.accuracy)
    assert sum(verdicts) <= 18
    assert abs(np.mean(accuracies) - 1 / 3) < 0.05  # the probe itself is unbiased under the null


def test_paired_difference_sees_entanglement_on_the_same_users():
    rng = np.random.default_rng(3)
    Z, y = _clusters(50, 4.0, 6, rng)
    entangled = Z.copy()
    entangled[:, :3] = rng.standard_normal((y.size, 3))  # the label-carrying coordinates replaced by noise
    clean = probe_accuracy(Z, y, probe="knn", n_permutations=9, rng=4)
    masked = probe_accuracy(entangled, y, probe="knn", n_permutations=9, rng=4)
    d = paired_accuracy_difference(clean, masked)
    assert d.ci[0] > 0.3 and d.n_users == y.size
    same = paired_accuracy_difference(clean, clean)
    assert same.mean == 0.0 and same.se == 0.0


def test_bad_inputs_are_named():
    Z = np.zeros((10, 2))
    with pytest.raises(ValueError, match="need >= 2 labels"):
        probe_accuracy(Z, np.zeros(10))
    with pytest.raises(ValueError, match="NaN"):
        probe_accuracy(np.full((10, 2), np.nan), np.repeat([0, 1], 5))
    with pytest.raises(ValueError, match="probe must be"):
        probe_accuracy(Z, np.repeat([0, 1], 5), probe="svm")


def test_knn_probe_votes_like_sklearn_on_each_fold():
    from sklearn.neighbors import KNeighborsClassifier

    from geometry.probes import _out_of_fold, _stratified_folds

    rng = np.random.default_rng(5)
    Z, y = _clusters(20, 1.0, 4, rng)
    folds = _stratified_folds(y, 4, rng)
    got = _out_of_fold(Z, "knn", folds, 5)(y)
    want = np.zeros(y.size, dtype=bool)
    for f in range(4):
        test = folds == f
        want[test] = KNeighborsClassifier(n_neighbors=5).fit(Z[~test], y[~test]).predict(Z[test]) == y[test]
    np.testing.assert_array_equal(got, want)

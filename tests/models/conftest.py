"""Fixtures shared by the training-core tests."""

from __future__ import annotations

import pytest

from models.readers import RawInteractions
from models.split import Split, SplitConfig, build_split
from models.synthetic import make_synthetic


@pytest.fixture(scope="module")
def tiny_split() -> Split:
    """400 synthetic users (3 taste groups, 150 items) split with 50 validation and 50 test users."""
    data = make_synthetic(n_users=400, n_items=150, n_groups=3, cohort_activity=(5, 20, 60), n_far_related_pairs=10)
    raw = RawInteractions(user=data.users, item=data.items, rating=None, sources=("synthetic",))
    return build_split(raw, SplitConfig(min_rating=None, n_heldout=50), "tiny")

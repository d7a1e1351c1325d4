"""Pure math on posteriors and inputs: W1 bounds, transport and Lipschitz bounds, masked-distance laws, the KL
budget, neighbourhoods. Nothing here imports ``analyses`` or ``figures``.

The package-level names below are the stable entry points for notebooks and tools.
"""

from geometry.bounds import (
    certified_lipschitz,
    empirical_lipschitz_ratios,
    expected_pairwise_bound,
    transport_bound,
    transport_bound_check,
    transport_slack,
)
from geometry.kl import KLBudget, kl_budget, kl_to_standard_normal
from geometry.masking import (
    contraction_probability,
    expansion_probability,
    hoeffding_contraction_bound,
    hoeffding_expansion_bound,
    mask_csr,
    mask_input,
    mask_sparse_values,
    masked_distance_cdf,
    masked_distance_moments,
    masked_distance_pmf,
    monte_carlo_probabilities,
    pair_overlaps,
    relative_threshold,
)
from geometry.neighbourhoods import (
    global_transfer,
    input_knn_drift,
    knn,
    knn_drift,
    knn_w2,
    mask_variance,
    neighbours_leaving,
    rank_threshold,
)
from geometry.sharing import estimate_sharing_radius, pair_w1_bounds, sharing_effects, sign_agreement
from geometry.wasserstein import (
    iter_pairwise_w1_bounds,
    pairwise_w1_bounds,
    sliced_w1_diag_gaussian,
    w1_bounds,
    w1_diag_gaussian_mc,
    w1_gaussian_1d,
    w1_samples,
    w2_diag_gaussian,
)

__all__ = [
    "KLBudget",
    "certified_lipschitz",
    "contraction_probability",
    "empirical_lipschitz_ratios",
    "estimate_sharing_radius",
    "expansion_probability",
    "expected_pairwise_bound",
    "global_transfer",
    "hoeffding_contraction_bound",
    "hoeffding_expansion_bound",
    "input_knn_drift",
    "iter_pairwise_w1_bounds",
    "kl_budget",
    "kl_to_standard_normal",
    "knn",
    "knn_drift",
    "knn_w2",
    "mask_csr",
    "mask_input",
    "mask_sparse_values",
    "mask_variance",
    "masked_distance_cdf",
    "masked_distance_moments",
    "masked_distance_pmf",
    "monte_carlo_probabilities",
    "neighbours_leaving",
    "pair_overlaps",
    "pair_w1_bounds",
    "pairwise_w1_bounds",
    "rank_threshold",
    "relative_threshold",
    "sharing_effects",
    "sign_agreement",
    "sliced_w1_diag_gaussian",
    "transport_bound",
    "transport_bound_check",
    "transport_slack",
    "w1_bounds",
    "w1_diag_gaussian_mc",
    "w1_gaussian_1d",
    "w1_samples",
    "w2_diag_gaussian",
]

"""Sparse training and scoring batches: CSR rows -> masked, normalised encoder input plus full targets.

The encoder's first layer is an :class:`torch.nn.EmbeddingBag` in ``sum`` mode, i.e. the product of the
sparse input row with the first weight matrix, so no dense ``(B, n_items)`` input is ever built. The
masking itself (which entries survive, with which value) is :func:`geometry.masking.mask_sparse_values`,
shared with the geometry analyses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geometry.masking import mask_sparse_values
from models.lazy import lazy_import

sp = lazy_import("scipy.sparse")
torch = lazy_import("torch")


@dataclass
class SparseBatch:
    """One batch of users in the form the models consume.

    Attributes
    ----------
    indices, offsets, weights : torch.Tensor
        EmbeddingBag input of the (masked, normalised) encoder input: item ids of the kept entries
        ``(nnz_kept,)``, the start of each row ``(B,)``, and their values ``(nnz_kept,)``.
    target_rows, target_cols : torch.Tensor, shape (nnz,)
        Row and item of every positive of the **full** history (what the decoder must reconstruct).
    counts : torch.Tensor, shape (B,)
        Number of positives per row of the full history.
    n_rows : int
        Batch size B.
    users : torch.Tensor or None, shape (B,)
        Row of each user in the training matrix, for models with a per-user parameter (CDAE's user node); None for
        held-out users (validation, test), who have none.
    """

    indices: torch.Tensor
    offsets: torch.Tensor
    weights: torch.Tensor
    target_rows: torch.Tensor
    target_cols: torch.Tensor
    counts: torch.Tensor
    n_rows: int
    users: torch.Tensor | None = None

    def to(self, device: torch.device) -> SparseBatch:
        return SparseBatch(
            self.indices.to(device),
            self.offsets.to(device),
            self.weights.to(device),
            self.target_rows.to(device),
            self.target_cols.to(device),
            self.counts.to(device),
            self.n_rows,
            None if self.users is None else self.users.to(device),
        )

    def rows(self, lo: int, hi: int) -> SparseBatch:
        """The sub-batch of rows ``lo:hi`` (e.g. one process's shard in data-parallel training)."""
        n_kept = torch.cat([self.offsets, self.offsets.new_tensor([self.indices.numel()])])
        k0, k1 = int(n_kept[lo]), int(n_kept[hi])
        starts = torch.cumsum(self.counts, 0) - self.counts
        t0 = int(starts[lo]) if lo < self.n_rows else int(self.counts.sum())
        t1 = t0 + int(self.counts[lo:hi].sum())
        return SparseBatch(
            indices=self.indices[k0:k1],
            offsets=self.offsets[lo:hi] - k0,
            weights=self.weights[k0:k1],
            target_rows=self.target_rows[t0:t1] - lo,
            target_cols=self.target_cols[t0:t1],
            counts=self.counts[lo:hi],
            n_rows=hi - lo,
            users=None if self.users is None else self.users[lo:hi],
        )

    def target_sum(self, values: torch.Tensor) -> torch.Tensor:
        """``sum_i x_ui * values_ui`` per row, for a dense ``(B, n_items)`` ``values`` (e.g. log-probabilities)."""
        picked = values[self.target_rows, self.target_cols]
        return torch.zeros(self.n_rows, dtype=values.dtype, device=values.device).index_add_(
            0, self.target_rows, picked
        )


def make_batch(
    rows: sp.csr_matrix,
    *,
    rho: float = 1.0,
    mode: str = "dropout",
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
    users: np.ndarray | None = None,
) -> SparseBatch:
    """Build a :class:`SparseBatch` from CSR rows, masking the encoder input with keep probability ``rho``.

    Parameters
    ----------
    rows : scipy.sparse.csr_matrix, shape (B, n_items)
        Binary histories.
    rho : float
        Keep probability in (0, 1]; 1 = clean input (evaluation).
    mode : {"dropout", "bernoulli"}
        See :func:`geometry.masking.mask_sparse_values`.
    generator : torch.Generator, optional
        Source of the mask draws (seeded by the trainer for exact resumption).
    users : numpy.ndarray of int, shape (B,), optional
        The rows' indices in the training matrix (:attr:`SparseBatch.users`).
    """
    rows = rows.tocsr()
    indptr = torch.from_numpy(rows.indptr.astype(np.int64))
    indices = torch.from_numpy(rows.indices.astype(np.int64))
    keep, values = mask_sparse_values(indptr, rho, mode=mode, generator=generator)
    counts = indptr[1:] - indptr[:-1]
    row_of = torch.repeat_interleave(torch.arange(rows.shape[0]), counts)
    kept_counts = torch.zeros(rows.shape[0], dtype=torch.int64).index_add_(
        0, row_of[keep], torch.ones_like(row_of[keep])
    )
    offsets = torch.cumsum(kept_counts, 0) - kept_counts
    batch = SparseBatch(
        indices=indices[keep],
        offsets=offsets,
        weights=values[keep].float(),
        target_rows=row_of,
        target_cols=indices,
        counts=counts,
        n_rows=int(rows.shape[0]),
        users=None if users is None else torch.as_tensor(np.asarray(users, dtype=np.int64)),
    )
    return batch.to(device) if device is not None else batch

"""Non-neural baselines: popularity, EASE (Steck 2019), WMF (Hu et al. 2008; :mod:`models.wmf`) and BPR-MF (Rendle
et al. 2009; :mod:`models.bpr`), with a CLI.

Usage::

    python -m models.baselines ease --dataset ml-1m          # lambda chosen on validation NDCG@100
    python -m models.baselines wmf --dataset ml-1m           # factors, regularization, alpha chosen likewise
    python -m models.baselines bpr --dataset ml-1m           # factors, regularization chosen likewise
    python -m models.baselines popularity --dataset ml-1m

Each prints the test metrics with standard errors and the user-group table, and writes a results JSON whose
top-level keys ``recall@20``, ``recall@50``, ``ndcg@100`` each hold ``mean``, ``se`` and ``n``, and beside it the
per-user values ``<name>_per_user.csv`` (the columns of ``models.evaluate``'s ``test_per_user.csv``), which
``python -m models.compare`` pairs with any other model's on the same test users.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.bpr import (
    BPR_FACTORS,
    BPR_ITERATIONS,
    BPR_LEARNING_RATE,
    BPR_REGULARIZATIONS,
    FOLD_IN_LR,
    FOLD_IN_STEPS,
    select_bpr,
)
from models.cli import OneLineParser, end_process, guarded
from models.data import add_dataset_arguments, data_options, dataset_names, default_config, split_from_args
from models.evaluation import evaluate
from models.io import atomic_write_bytes, atomic_write_json, check_output_file, resolve_device
from models.lazy import lazy_import
from models.split import Split
from models.wmf import WMF_ALPHAS, WMF_FACTORS, WMF_ITERATIONS, WMF_REGULARIZATIONS, select_wmf

sp = lazy_import("scipy.sparse")
torch = lazy_import("torch")

EASE_LAMBDAS: tuple[float, ...] = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)
SELECTION_METRIC = "ndcg@100"


def csr_to_torch(batch: sp.csr_matrix, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A scipy CSR batch as a torch sparse CSR tensor (no densification); ``dtype`` default float32."""
    dtype = torch.float32 if dtype is None else dtype
    batch = batch.tocsr()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(batch.indptr.astype(np.int64)),
            torch.from_numpy(batch.indices.astype(np.int64)),
            torch.from_numpy(batch.data.astype(np.float32)).to(dtype),
            size=batch.shape,
            device=device,
            check_invariants=False,  # scipy already guarantees a canonical CSR
        )


@dataclass
class Popularity:
    """Scores every item by its number of training users (the same ranking for everyone)."""

    counts: torch.Tensor  # (n_items,)

    @classmethod
    def fit(cls, train: sp.csr_matrix, device: torch.device | None = None) -> Popularity:
        counts = np.asarray(train.sum(axis=0), dtype=np.float32).ravel()
        return cls(torch.from_numpy(counts).to(device or "cpu"))

    def score(self, fold_in: sp.csr_matrix) -> torch.Tensor:
        return self.counts.expand(fold_in.shape[0], -1)


def gram(train: sp.csr_matrix, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Dense item-item Gram matrix ``G = X^T X`` (n_items x n_items), from the sparse training matrix; ``dtype``
    default float32."""
    dtype = torch.float32 if dtype is None else dtype
    g = (train.T @ train).toarray()  # sparse product; only the I x I result is dense
    return torch.from_numpy(g).to(device=device, dtype=dtype)


def ease_weights(g: torch.Tensor, lam: float) -> torch.Tensor:
    """EASE item-item weights from the Gram matrix.

    ``P = (G + lambda I)^{-1}``, ``B = -P / diag(P)`` column-wise, ``diag(B) = 0`` (Steck 2019, eq. 8);
    negative weights are kept. ``G + lambda I`` is symmetric positive definite for ``lambda > 0``; an LU
    inverse is used because it is faster than a Cholesky inverse in torch on CPU and accurate here (the
    ridge bounds the condition number).

    Parameters
    ----------
    g : torch.Tensor, shape (n_items, n_items)
        ``X^T X``.
    lam : float
        L2 penalty lambda > 0.

    Returns
    -------
    torch.Tensor, shape (n_items, n_items)
        ``B``, same dtype and device as ``g``; scores are ``x @ B``.
    """
    if not lam > 0:
        raise ValueError(f"EASE lambda must be > 0, got {lam}")
    a = g.clone()
    a.diagonal().add_(lam)
    p = torch.linalg.inv(a)
    b = p / (-p.diagonal()).unsqueeze(0)  # column j divided by -P_jj
    b.diagonal().zero_()
    return b


@dataclass
class EASE:
    """Fitted EASE model: scores a fold-in batch as ``X_batch @ B`` with a sparse left operand."""

    weights: torch.Tensor  # (n_items, n_items)
    lam: float

    @classmethod
    def fit(
        cls,
        train: sp.csr_matrix,
        lam: float,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> EASE:
        device = device or torch.device("cpu")
        return cls(ease_weights(gram(train, device, dtype), lam), lam)

    def score(self, fold_in: sp.csr_matrix) -> torch.Tensor:
        x = csr_to_torch(fold_in, self.weights.device, self.weights.dtype)
        return (x @ self.weights).float()


@dataclass
class GramEigen:
    """Eigendecomposition ``G = V diag(w) V^T`` of the Gram matrix, shared by the EASE of every lambda.

    With it ``P = (G + lambda I)^{-1} = V diag(1 / (w + lambda)) V^T`` for any lambda at the cost of products, no
    new inverse (:class:`EigenEASE`).
    """

    values: torch.Tensor  # (n_items,) w, ascending
    vectors: torch.Tensor  # (n_items, n_items) V, orthonormal columns

    @classmethod
    def of(cls, g: torch.Tensor) -> GramEigen:
        """Decompose ``g`` (symmetric; ``torch.linalg.eigh``, same dtype and device)."""
        values, vectors = torch.linalg.eigh(g)
        return cls(values, vectors)


class EigenEASE:
    """EASE at one lambda from :class:`GramEigen`, scoring without forming ``B``.

    ``B = I - P diag(1 / diag P)`` (Steck 2019, eq. 8: ``B_ij = -P_ij / P_jj`` off the diagonal, ``B_jj = 0``), so
    ``x B = x - (x P) / diag P`` with ``x P = ((x V) / (w + lambda)) V^T`` and ``diag P = (V * V) (1 / (w + lambda))``:
    per lambda ``O(I^2)`` for ``diag P`` and ``2 n I^2`` flops for ``n`` scored users, against ``O(I^3)`` for the
    inverse of :func:`ease_weights`. The same scores as :class:`EASE` up to rounding (tested).
    """

    def __init__(self, eig: GramEigen, lam: float) -> None:
        if not lam > 0:
            raise ValueError(f"EASE lambda must be > 0, got {lam}")
        self.eig, self.lam = eig, float(lam)
        self.inverse_values = 1.0 / (eig.values + self.lam)
        self.diag_p = (eig.vectors * eig.vectors) @ self.inverse_values

    def score(self, fold_in: sp.csr_matrix) -> torch.Tensor:
        v = self.eig.vectors
        x = csr_to_torch(fold_in, v.device, v.dtype)
        xp = ((x @ v) * self.inverse_values) @ v.T
        return (x.to_dense() - xp / self.diag_p).float()

    def to_ease(self) -> EASE:
        """The weights ``B`` of this lambda as an :class:`EASE` (one ``I x I`` product)."""
        v = self.eig.vectors
        p = (v * self.inverse_values) @ v.T
        b = p / (-self.diag_p).unsqueeze(0)
        b.diagonal().zero_()
        return EASE(b, self.lam)


@dataclass
class LambdaSearch:
    """Validation results of the EASE lambda grid."""

    best: float
    scores: dict[float, dict]  # lambda -> validation summary


EASE_SOLVERS = ("auto", "inverse", "eigen")
EIGEN_OVERHEAD = 4.3
"""One eigendecomposition plus the chosen lambda's weights cost about 4.3 inverses of the same matrix
(``benchmarks/RESULTS_ease.md``: 458.5 + 85.4 s against 128.3 s per inverse at 17,000 items; 16.3 + 2.0 against 4.5
s at 5,000)."""
SCORING_PER_INVERSE = 0.6
"""Scoring ``n`` validation users from the decomposition (``2 n I^2`` flops) costs about ``0.6 n / I`` of an
inverse (``2 I^3`` flops, run at a lower share of the GEMM rate): 24.6 against 128.3 s for 3,000 users at 17,000
items."""


def faster_solver(n_lambdas: int, n_items: int, n_users: int) -> str:
    """The EASE solver the benchmark's costs say is faster for a grid of ``n_lambdas`` on ``n_items`` items with
    ``n_users`` validation users: ``eigen`` when ``n_lambdas (1 - 0.6 n_users / n_items) > 4.3``
    (:data:`SCORING_PER_INVERSE`, :data:`EIGEN_OVERHEAD`), else ``inverse``. E.g. the default grid of 7 at
    17,000 items and 3,000 users: eigen (716 s against 898 s measured); at 5,000 items, nearly a tie (31.28
    against 31.32 s), eigen."""
    saved_per_lambda = 1.0 - SCORING_PER_INVERSE * n_users / max(n_items, 1)
    return "eigen" if n_lambdas * saved_per_lambda > EIGEN_OVERHEAD else "inverse"


def select_ease_lambda(
    split: Split,
    lambdas: Sequence[float] = EASE_LAMBDAS,
    *,
    solver: str = "auto",
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    batch_size: int = 1000,
    progress: bool = False,
) -> tuple[EASE, LambdaSearch]:
    """Fit EASE for every lambda (one shared Gram matrix) and keep the best validation NDCG@100.

    ``solver``: ``inverse`` inverts ``G + lambda I`` for each lambda (:func:`ease_weights`); ``eigen`` decomposes
    ``G`` once and scores every lambda from it (:class:`EigenEASE`), then forms the chosen lambda's weights; ``auto``
    (default) takes the faster for the grid, the items and the validation users (:func:`faster_solver`, from
    ``benchmarks/bench_ease.py``). Both give the same scores up to rounding. ``progress``: a bar over the grid
    (its time estimate) and one line per lambda.
    """
    from tqdm.auto import tqdm

    if not lambdas:
        raise ValueError("the lambda grid is empty; pass at least one value")
    if solver not in EASE_SOLVERS:
        raise ValueError(f"unknown EASE solver {solver!r}; use one of {', '.join(EASE_SOLVERS)}")
    device = device or torch.device("cpu")
    if solver == "auto":
        solver = faster_solver(len(lambdas), split.n_items, split.validation.n_users)
        if progress:
            print(f"  solver: {solver} (faster for {len(lambdas)} lambdas at {split.n_items:,} items)", file=sys.stderr)
    g = gram(split.train, device, dtype)
    eig = None
    if solver == "eigen":
        start = time.perf_counter()
        eig = GramEigen.of(g)
        del g  # the decomposition replaces the Gram matrix: one I x I matrix less at the peak
        if progress:
            print(f"  eigendecomposition of the Gram matrix: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    best, best_value, scores = None, -np.inf, {}
    bar = tqdm(lambdas, desc="EASE lambda", unit="lambda", disable=not progress, leave=False)
    for lam in bar:
        start = time.perf_counter()
        model = EigenEASE(eig, float(lam)) if eig is not None else EASE(ease_weights(g, float(lam)), float(lam))
        ev = evaluate(model.score, split.validation, batch_size=batch_size)
        scores[float(lam)] = ev.summary()
        value = scores[float(lam)][SELECTION_METRIC]["mean"]
        if progress:
            seconds = time.perf_counter() - start
            line = f"  lambda {lam:>8g}: validation {SELECTION_METRIC} {value:.4f} ({seconds:.1f} s)"
            bar.write(line, file=sys.stderr)
        if value > best_value:
            best, best_value = model, value
    bar.close()
    assert best is not None
    chosen = best.to_ease() if isinstance(best, EigenEASE) else best
    return chosen, LambdaSearch(chosen.lam, scores)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far, in MB: the resident set's high-water mark (``getrusage``, Linux KB),
    or on CUDA the most the device allocator held."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _int_grid(text: str) -> list[int]:
    try:
        grid = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 100,200, got {text!r}") from None
    if not grid or min(grid) < 1:
        raise argparse.ArgumentTypeError(f"every value must be an integer >= 1, got {text!r}")
    return grid


def _float_grid(text: str, least: float = 0.0, strict: bool = False) -> list[float]:
    try:
        grid = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0.1,1,10, got {text!r}") from None
    ok = all(math.isfinite(v) and (v > least if strict else v >= least) for v in grid)
    if not grid or not ok:
        raise argparse.ArgumentTypeError(f"every value must be a finite number {'>' if strict else '>='} {least:g}")
    return grid


def _lambda_grid(text: str) -> list[float]:
    try:
        grid = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 100,500,1000, got {text!r}") from None
    if not grid or not all(math.isfinite(lam) and lam > 0 for lam in grid):
        raise argparse.ArgumentTypeError(f"every lambda must be a finite number > 0, got {text!r}")
    return grid


def default_result_path(args: argparse.Namespace) -> Path:
    """``out/baselines/MODEL-DATASET.json`` with the documented defaults; any option that changes the result adds a
    short hash of the options, so results of other settings never overwrite each other."""
    name = f"{args.model}-{args.dataset.replace(':', '_').replace('/', '_')}"
    options = {
        "lambdas": args.lambdas if args.model == "ease" and args.lambdas != list(EASE_LAMBDAS) else None,
        "dtype": args.dtype if args.model == "ease" and args.dtype != "float32" else None,
        "solver": args.solver if args.model == "ease" and args.solver != "auto" else None,
        **(_mf_options(args) if args.model in MF_DEFAULTS else {}),
        **{k: str(getattr(args, k)) for k in ("path", "heldout") if getattr(args, k) is not None},
        **{k: str(v) for k, v in data_options(args).items()},  # every data option given, table options included
    }
    options = {k: v for k, v in options.items() if v is not None}
    if options:
        name += "-" + hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]
    return Path("out") / "baselines" / f"{name}.json"


def result_per_user_path(result: Path) -> Path:
    """Where the per-user test values of a results JSON go: ``NAME_per_user.csv`` beside ``NAME.json``."""
    return result.with_name(f"{result.stem}_per_user.csv")


MF_DEFAULTS = {
    "wmf": {"factors": list(WMF_FACTORS), "regularization": list(WMF_REGULARIZATIONS), "iterations": WMF_ITERATIONS},
    "bpr": {"factors": list(BPR_FACTORS), "regularization": list(BPR_REGULARIZATIONS), "iterations": BPR_ITERATIONS},
}
"""Per factorisation model, the grids and sweeps an option not given takes (they differ between the two losses)."""
MF_ONLY = {"wmf": ("alpha",), "bpr": ("learning_rate", "fold_in_steps", "fold_in_lr")}
MF_FIXED_DEFAULTS = {
    "alpha": list(WMF_ALPHAS),
    "learning_rate": BPR_LEARNING_RATE,
    "fold_in_steps": FOLD_IN_STEPS,
    "fold_in_lr": FOLD_IN_LR,
    "seed": 0,
}


def _mf_options(args: argparse.Namespace) -> dict:
    """The factorisation options of ``args.model`` that differ from their defaults (for the result file's name)."""
    defaults = {**MF_DEFAULTS[args.model], "seed": 0}
    defaults.update({k: MF_FIXED_DEFAULTS[k] for k in MF_ONLY[args.model]})
    return {k: getattr(args, k) for k, default in defaults.items() if getattr(args, k) != default}


def _fill_mf_defaults(args: argparse.Namespace) -> None:
    """Options left unset take ``args.model``'s defaults; another model's options given are refused in one line."""
    if args.model not in MF_DEFAULTS:
        given = [k for k in ("factors", "regularization", "iterations") if getattr(args, k) is not None]
        given += [k for names in MF_ONLY.values() for k in names if getattr(args, k) != MF_FIXED_DEFAULTS[k]]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise ValueError(f"{flag} applies to wmf and bpr only, not {args.model}")
        return
    for key, default in MF_DEFAULTS[args.model].items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    other = next(m for m in MF_ONLY if m != args.model)
    wrong = [k for k in MF_ONLY[other] if getattr(args, k) != MF_FIXED_DEFAULTS[k]]
    if wrong:
        raise ValueError(f"--{wrong[0].replace('_', '-')} applies to {other} only, not {args.model}")
    if args.iterations < 1:
        raise ValueError(f"--iterations must be an integer >= 1, got {args.iterations}")


def grid_edges(best: dict, grids: dict) -> list[str]:
    """The searched options whose chosen value is the smallest or largest of a grid of several values."""
    return [name for name, grid in grids.items() if len(grid) > 1 and best[name] in (min(grid), max(grid))]


def _warn_grid_edges(best: dict, grids: dict) -> None:
    for name in grid_edges(best, grids):
        print(f"warning: best {name} {best[name]:g} is at the edge of its grid; widen it", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m models.baselines",
        description="Popularity, EASE and WMF baselines under the strong-generalization protocol.",
    )
    parser.add_argument("model", choices=["ease", "popularity", "wmf", "bpr"])
    parser.add_argument("--dataset", default="ml-1m", help=f"one of {', '.join(dataset_names())}")
    parser.add_argument(
        "--lambdas",
        type=_lambda_grid,
        default=list(EASE_LAMBDAS),
        help="EASE: comma-separated lambda grid searched on validation NDCG@100 (default %(default)s)",
    )
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="EASE precision")
    parser.add_argument(
        "--solver",
        choices=EASE_SOLVERS,
        default="auto",
        help="EASE lambda search: one inverse per lambda, one eigendecomposition for the whole grid (same scores), "
        "or auto: the faster of the two for the grid and the data, from benchmarks/RESULTS_ease.md (default)",
    )
    parser.add_argument(
        "--factors", type=_int_grid, help=f"WMF, BPR: latent factors to try (default {list(WMF_FACTORS)})"
    )
    parser.add_argument(
        "--regularization",
        type=_float_grid,
        help=f"WMF, BPR: L2 weights to try (default WMF {list(WMF_REGULARIZATIONS)}, BPR {list(BPR_REGULARIZATIONS)})",
    )
    parser.add_argument(
        "--alpha",
        type=lambda t: _float_grid(t, 0.0, strict=True),
        default=list(WMF_ALPHAS),
        help="WMF: confidence weights (c = 1 + alpha x) to try (default %(default)s)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        help=f"WMF: ALS sweeps (default {WMF_ITERATIONS}); BPR: epochs of sampled triples (default {BPR_ITERATIONS})",
    )
    parser.add_argument("--learning-rate", type=float, default=BPR_LEARNING_RATE, help="BPR: SGD rate (0.01)")
    parser.add_argument(
        "--fold-in-steps",
        type=int,
        default=FOLD_IN_STEPS,
        help=f"BPR: SGD steps on a held-out user's vector, items frozen (default {FOLD_IN_STEPS})",
    )
    parser.add_argument(
        "--fold-in-lr", type=float, default=FOLD_IN_LR, help=f"BPR: rate of those steps (default {FOLD_IN_LR})"
    )
    parser.add_argument("--seed", type=int, default=0, help="WMF, BPR: seed of the factors and the sampling")
    parser.add_argument("--batch-size", type=int, default=1000, help="users scored per batch")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    parser.add_argument(
        "--out",
        type=Path,
        help="results JSON (default out/baselines/MODEL-DATASET.json; other options add a hash of them to the name)",
    )
    add_dataset_arguments(parser)
    args = parser.parse_args(argv)
    return guarded(lambda: _run(args), what=f"{args.model} on {args.dataset}")


def _run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be an integer >= 1, got {args.batch_size}")
    default_config(args.dataset)  # an unknown dataset is one line before anything is created (or torch loads)
    _fill_mf_defaults(args)
    device = resolve_device(args.device)
    out = args.out or default_result_path(args)
    check_output_file(out)
    split = split_from_args(args.dataset, args)
    start = time.perf_counter()
    extra: dict = {}
    if args.model == "ease":
        dtype = torch.float32 if args.dtype == "float32" else torch.float64
        print(f"EASE on {args.dataset}: {split.n_items:,} items, searching lambda on validation", file=sys.stderr)
        model, search = select_ease_lambda(
            split,
            args.lambdas,
            solver=args.solver,
            device=device,
            dtype=dtype,
            batch_size=args.batch_size,
            progress=True,
        )
        if search.best in (min(args.lambdas), max(args.lambdas)) and len(args.lambdas) > 1:
            print(f"warning: best lambda {search.best:g} is at the edge of the grid; widen --lambdas", file=sys.stderr)
        score_fn = model.score
        validation = {str(k): v for k, v in search.scores.items()}
        extra = {"lambda": search.best, "dtype": args.dtype, "solver": args.solver, "validation": validation}
    elif args.model == "wmf":
        size = len(args.factors) * len(args.regularization) * len(args.alpha)
        print(f"WMF on {args.dataset}: {split.n_items:,} items, {size} settings on validation", file=sys.stderr)
        wmf, search = select_wmf(
            split,
            args.factors,
            args.regularization,
            args.alpha,
            iterations=args.iterations,
            seed=args.seed,
            batch_size=args.batch_size,
            progress=True,
        )
        _warn_grid_edges(
            search["best"], {"factors": args.factors, "regularization": args.regularization, "alpha": args.alpha}
        )
        score_fn = wmf.score
        extra = {**search["best"], "iterations": args.iterations, "seed": args.seed, "validation": search["grid"]}
    elif args.model == "bpr":
        size = len(args.factors) * len(args.regularization)
        print(f"BPR-MF on {args.dataset}: {split.n_items:,} items, {size} settings on validation", file=sys.stderr)
        bpr, search = select_bpr(
            split,
            args.factors,
            args.regularization,
            learning_rate=args.learning_rate,
            iterations=args.iterations,
            seed=args.seed,
            fold_in_steps=args.fold_in_steps,
            fold_in_lr=args.fold_in_lr,
            batch_size=args.batch_size,
            progress=True,
        )
        _warn_grid_edges(search["best"], {"factors": args.factors, "regularization": args.regularization})
        score_fn = bpr.score
        extra = {
            **search["best"],
            "iterations": args.iterations,
            "learning_rate": args.learning_rate,
            "fold_in": {"steps": args.fold_in_steps, "lr": args.fold_in_lr},
            "seed": args.seed,
            "validation": search["grid"],
        }
    else:
        score_fn = Popularity.fit(split.train, device).score
    test = evaluate(score_fn, split.test, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    result = {
        **test.to_dict(),
        "model": args.model,
        "dataset": args.dataset,
        "split": {
            "cache": split.report.get("cache"),
            "items": split.n_items,
            "train_users": int(split.train.shape[0]),
            "test_users": split.test.n_users,
        },
        "options": {"lambdas": args.lambdas, "dtype": args.dtype}
        if args.model == "ease"
        else ({"factors": args.factors, "regularization": args.regularization} if args.model in MF_DEFAULTS else {}),
        "seconds": round(seconds, 2),
        "peak_memory_mb": peak_memory_mb(device),
        **extra,
    }
    per_user = result_per_user_path(out)
    atomic_write_bytes(per_user, test.per_user_table(split.test.users).to_csv(index=False).encode())
    atomic_write_json(out, result)
    title = f"{args.model} on {args.dataset} (test users)"
    if args.model == "ease":
        title += f", lambda = {extra['lambda']:g}"
    if args.model in MF_DEFAULTS:
        title += f", {extra['factors']} factors, regularization {extra['regularization']:g}"
        title += f", alpha {extra['alpha']:g}" if args.model == "wmf" else ""
    print(title)
    print(test.format_table())
    print(f"{seconds:.1f} s, peak memory {result['peak_memory_mb']:,.0f} MB; wrote {out} and {per_user.name}")
    return 0


if __name__ == "__main__":
    end_process(main())

"""Training loop for Multi-VAE, Multi-DAE, RecVAE and CDAE, with masking rate ``rho`` and PIA.

A run is a folder::

    config.json      resolved configuration (every default filled in) and derived quantities
    split.json       which split was used (dataset, cache folder, report counts)
    metrics.jsonl    one line per epoch (numbered from 1): losses, beta, lambda_A, validation metrics, seconds
    checkpoint.pt    full training state after the last finished epoch (written atomically)
    best.pt          model weights of the epoch with the best validation NDCG@100

Determinism and resumption: the user order of every pass comes from ``numpy.random.default_rng([seed,
epoch, phase, repeat])`` and every mask and ``eps`` draw from one ``torch.Generator`` whose state is
checkpointed, so ``resume=True`` after a kill continues to the same final result as an uninterrupted run.

Data parallelism (``torchrun``): every process draws the same global batch, masks and noise, computes the
loss of its contiguous shard of rows divided by the *global* batch size, and gradients are summed with
``torch.distributed.all_reduce``: the update equals the single-process one up to floating-point summation
order.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.batches import make_batch
from models.data import (
    DATA_KEYS,
    SPLIT_DESTS,
    TABLE_DESTS,
    TABLE_PREFIXES,
    TableOptions,
    check_data_options,
    default_config,
    load_split,
)
from models.evaluation import evaluate
from models.io import (
    DamagedFile,
    FolderLock,
    atomic_write_bytes,
    atomic_write_json,
    load_verified,
    resolve_device,
    save_verified,
)
from models.lazy import lazy_import
from models.precision import PRECISIONS, autocast, resolve_precision
from models.split import Split, SplitConfig

torch = lazy_import("torch")
dist = lazy_import("torch.distributed")
nn = lazy_import("torch.nn")

if TYPE_CHECKING:  # the model classes derive from nn.Module: imported where a model is built (torch loads then)
    from models.pia import ItemAnchors
    from models.vae import AutoencoderBase

MODELS = ("multvae", "multdae", "recvae", "cdae")
MASK_MODES = ("dropout", "bernoulli")
# Reference hyperparameters (PROTOCOL.md); None fields of TrainConfig take these.
MODEL_DEFAULTS: dict[str, dict] = {
    "multvae": {"lr": 1e-3, "epochs": 200, "weight_decay": 0.0, "hidden": (600,)},
    "multdae": {"lr": 1e-3, "epochs": 200, "weight_decay": 0.01, "hidden": ()},
    "recvae": {"lr": 5e-4, "epochs": 50, "weight_decay": 0.0, "hidden": (600,)},
    # CDAE (Wu et al. 2016; models/cdae.py): [I-K-I] with K = latent_dim, the Multi-DAE schedule
    "cdae": {"lr": 1e-3, "epochs": 200, "weight_decay": 0.01, "hidden": ()},
}
KL_FREE_MODELS = ("multdae", "cdae")  # no posterior: no KL term, and no PIA (it aligns a posterior)
VALIDATION_METRICS = ("ndcg@100", "recall@20", "recall@50")
# TrainConfig field -> the models.train flag that sets it (named in error lines).
FIELD_FLAGS = {
    "model": "--model",
    "dataset": "--dataset",
    "dataset_path": "--path",
    "heldout": "--heldout",
    "rho": "--rho",
    "mask_mode": "--mask",
    "beta_cap": "--beta-cap",
    "anneal_steps": "--anneal-steps",
    "anneal_epochs": "--anneal-epochs",
    "pia": "--pia",
    "pia_warmup": "--pia-warmup",
    "pia_anchors": "--pia-anchors",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "weight_decay": "--weight-decay",
    "latent_dim": "--latent",
    "hidden": "--hidden",
    "gamma": "--gamma",
    "enc_epochs": "--enc-epochs",
    "seed": "--seed",
    "device": "--device",
    "precision": "--precision",
}


class ConfigError(ValueError):
    """An impossible training configuration (raised before any training)."""


def _check_type(name: str, annotation: str, value: object) -> None:
    """One line if ``value`` does not have the type of the :class:`TrainConfig` field ``name`` (annotation as text,
    e.g. ``"int | None"``). Numbers must be finite; booleans are not numbers here."""
    if value is None:
        if "None" in annotation:
            return
        raise ConfigError(f"{name} must be set, got null")
    base = annotation.split("|")[0].strip()
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if base == "int":
        ok, kind = number and float(value).is_integer() and isinstance(value, int), "an integer"
    elif base == "float":
        ok, kind = number and math.isfinite(value), "a finite number"
    elif base == "str":
        ok, kind = isinstance(value, str), "a string"
    elif base == "dict":
        ok = isinstance(value, dict) and set(value) <= set(DATA_KEYS)
        kind = f"a table of data options ({', '.join(DATA_KEYS)})"
    else:  # tuple[int, ...]: the hidden widths
        ok = isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        kind = "a list of integer widths"
    if not ok:
        flag = FIELD_FLAGS.get(name)
        where = f" ({flag})" if flag else ""
        raise ConfigError(f"{name}{where} must be {kind}, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; ``None`` means the model's reference default.

    Attributes
    ----------
    model : {"multvae", "multdae", "recvae", "cdae"}
    dataset : str
        A name accepted by :func:`models.data.load_split`; ``dataset_path`` and ``heldout`` as there.
    rho : float
        Keep probability of the input mask, in (0, 1]; 1 = clean input. Reference: 0.5.
    mask_mode : {"dropout", "bernoulli"}
        ``dropout`` = L2-normalise then inverted dropout (Multi-VAE); ``bernoulli`` = ``x ⊙ b`` then L2-normalise.
    beta_cap : float
        Cap of the KL weight (0.2).
    anneal_steps : int
        ``beta = min(beta_cap, updates / anneal_steps)`` (reference: 200,000 updates).
    anneal_epochs : int or None
        Alternative: reach the cap after this many epochs whatever the dataset size.
    pia : float
        ``lambda_A`` (0 = no PIA). ``pia_warmup`` epochs of linear warm-up; ``pia_anchors`` ``separate`` or
        ``tied`` (RecVAE only); ``pia_init_std`` the anchors' initial scale.
    epochs, batch_size, lr, weight_decay : training schedule (weight decay = explicit ``lambda sum ||W||^2``).
    hidden, latent_dim : architecture.
    gamma, enc_epochs : RecVAE's KL weight per interaction and encoder passes per outer epoch.
    seed : int
        Seeds the initialisation, the batch order, the masks and the noise.
    data : dict or None
        The other data options the split was made with (:data:`DATA_KEYS`: ``min_rating``, ``min_uc``,
        ``min_sc`` and, for ``csv:``/``parquet:`` tables, ``user_col``, ``item_col``, ``rating_col``, ``sep``,
        ``encoding``), as given on the command line; None when none was given. Recorded so that every later
        reader (``models.evaluate``, the analysis jobs) reloads exactly this split. Left out of
        :meth:`to_json` when None, so configurations from before it keep their run-cache keys.
    precision : str
        ``fp32`` (the published protocol), ``bf16`` or ``auto`` (:mod:`models.precision`): the forward pass of
        training under bf16 autocast; weights, optimizer, likelihood, KL, PIA and evaluation stay float32. Left
        out of :meth:`to_json` when ``fp32``, for the same reason.
    """

    model: str = "multvae"
    dataset: str = "ml-1m"
    dataset_path: str | None = None
    heldout: float | None = None
    rho: float = 0.5
    mask_mode: str = "dropout"
    beta_cap: float = 0.2
    anneal_steps: int = 200_000
    anneal_epochs: int | None = None
    pia: float = 0.0
    pia_warmup: int = 0
    pia_anchors: str = "separate"
    pia_init_std: float = 0.01
    epochs: int | None = None
    batch_size: int = 500
    lr: float | None = None
    weight_decay: float | None = None
    hidden: tuple[int, ...] | None = None
    latent_dim: int = 200
    gamma: float = 0.005
    enc_epochs: int = 3
    seed: int = 0
    eval_batch_size: int = 1000
    device: str = "auto"
    data: dict | None = None
    precision: str = "fp32"

    def resolved(self) -> TrainConfig:
        """A copy with every ``None`` default filled from :data:`MODEL_DEFAULTS`."""
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        defaults = MODEL_DEFAULTS[self.model]
        updates = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        out = replace(self, **updates)
        if out.hidden is not None:
            out = replace(out, hidden=tuple(int(h) for h in out.hidden))
        return out

    def validate(self) -> None:
        """Raise :class:`ConfigError` with one clear line, naming the option, for an impossible configuration.

        Types first (every field has one: an integer field rejects ``2.5`` and ``True``, a number field rejects
        ``"abc"``, ``inf`` and ``nan``), then ranges, then the device against this machine.
        """
        for f in fields(self):
            _check_type(f.name, f.type, getattr(self, f.name))
        c = self.resolved()
        h = c.heldout
        checks = [
            (0.0 < c.rho <= 1.0, f"rho must lie in (0, 1] (keep probability; 1 = clean input), got {c.rho}"),
            (c.mask_mode in MASK_MODES, f"mask_mode must be one of {MASK_MODES}, got {c.mask_mode!r}"),
            (c.beta_cap >= 0, f"beta_cap must be >= 0, got {c.beta_cap}"),
            (c.anneal_steps > 0, f"anneal_steps must be > 0, got {c.anneal_steps}"),
            (
                c.anneal_epochs is None or c.anneal_epochs > 0,
                f"anneal_epochs must be > 0, got {c.anneal_epochs}",
            ),
            (c.pia >= 0, f"pia must be >= 0 (lambda_A of PIA), got {c.pia}"),
            (c.pia_warmup >= 0, f"pia_warmup must be >= 0 epochs, got {c.pia_warmup}"),
            (
                c.pia_anchors in ("separate", "tied"),
                f"pia_anchors must be separate or tied, got {c.pia_anchors!r}",
            ),
            (
                c.pia_anchors != "tied" or c.model == "recvae" or c.pia == 0,
                "tied anchors need a linear decoder (latent -> items): only --model recvae has one",
            ),
            (c.pia_init_std > 0, f"pia_init_std must be > 0, got {c.pia_init_std}"),
            (c.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {c.precision!r}"),
            (c.epochs > 0, f"epochs must be > 0, got {c.epochs}"),
            (c.batch_size > 0, f"batch_size must be > 0, got {c.batch_size}"),
            (c.eval_batch_size > 0, f"eval_batch_size must be > 0, got {c.eval_batch_size}"),
            (c.lr > 0, f"lr must be > 0, got {c.lr}"),
            (c.weight_decay >= 0, f"weight_decay must be >= 0, got {c.weight_decay}"),
            (c.latent_dim > 0, f"latent_dim must be > 0, got {c.latent_dim}"),
            (all(w > 0 for w in c.hidden), f"hidden widths must be > 0, got {list(c.hidden)}"),
            (c.model != "recvae" or len(c.hidden) == 1, f"recvae takes one hidden width, got {list(c.hidden)}"),
            (
                c.model != "cdae" or not c.hidden,
                f"hidden takes no widths for cdae ([I-K-I], K = --latent), got {list(c.hidden)}",
            ),
            (
                c.model != "cdae" or c.mask_mode == "dropout",
                "mask_mode must be dropout for cdae (its corruption: drop with probability 1 - rho, scale by 1 / rho)",
            ),
            (
                c.model != "cdae" or c.pia == 0,
                f"pia must be 0 for cdae (PIA aligns a posterior; CDAE has none), got {c.pia}",
            ),
            (c.gamma >= 0, f"gamma must be >= 0, got {c.gamma}"),
            (c.enc_epochs > 0, f"enc_epochs must be > 0, got {c.enc_epochs}"),
            (c.seed >= 0, f"seed must be >= 0, got {c.seed}"),
            (
                h is None or (h >= 1 and float(h).is_integer()) or 0 < h < 0.5,
                f"heldout must be a whole number of users >= 1 or a fraction in (0, 0.5), got {h}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                name, _, rest = message.partition(" ")
                flag = FIELD_FLAGS.get(name)
                raise ConfigError(f"{name} ({flag}) {rest}" if flag and flag not in rest else message)
        if c.data:
            try:
                check_data_options(c.dataset, c.data)
                for options in (split_config_of(c), table_options_of(c)):  # None: nothing of that kind given
                    if options is not None:
                        options.validate()
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if c.device not in ("auto", "cpu"):  # always available; checking them would load torch for nothing
            try:
                resolve_device(c.device)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None

    def to_json(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(d["hidden"]) if d["hidden"] is not None else None
        if d["data"] is None:
            del d["data"]  # the JSON (and the run-cache key) of a run without data options is as before
        if d["precision"] == "fp32":
            del d["precision"]  # likewise for the published float32 protocol
        return d

    @classmethod
    def from_json(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown configuration keys {unknown}; valid keys: {sorted(names)}")
        d = dict(d)
        if isinstance(d.get("hidden"), list):
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)


def build_model(config: TrainConfig, n_items: int, n_users: int | None = None) -> AutoencoderBase:
    """The model a (resolved) configuration describes, initialised from ``torch.manual_seed(seed)``; ``n_users``
    (training users) is needed by CDAE only, for its user vectors."""
    c = config.resolved()
    from models.vae import MultiDAE, MultiVAE

    torch.manual_seed(c.seed)
    if c.model == "cdae":
        from models.cdae import CDAE

        if n_users is None:
            raise ValueError("cdae needs the number of training users (one user vector each)")
        return CDAE(n_items, n_users, c.latent_dim)
    if c.model == "multvae":
        return MultiVAE(n_items, c.hidden, c.latent_dim)
    if c.model == "multdae":
        return MultiDAE(n_items, c.hidden, c.latent_dim)
    from models.recvae import RecVAE

    return RecVAE(n_items, hidden=c.hidden[0] if c.hidden else 600, latent_dim=c.latent_dim, gamma=c.gamma)


@dataclass
class Phase:
    """One kind of pass over the training users (RecVAE alternates two; the others have one)."""

    name: str
    parameters: list[nn.Parameter]
    rho: float
    repeats: int
    use_kl: bool
    use_pia: bool
    after: Callable[[], None] | None = None
    optimizer: torch.optim.Optimizer | None = None


def adam(parameters: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Adam (the references' optimiser) with the fused kernel: the same update, 8x faster than the per-tensor
    loop on CPU for the I x H weight matrices (measured: 9 ms instead of 78 ms for a 20,108 x 200 matrix)."""
    return torch.optim.Adam(parameters, lr=lr, fused=True)


def make_phases(config: TrainConfig, model: AutoencoderBase, anchors: ItemAnchors | None) -> list[Phase]:
    c = config.resolved()
    anchor_params = [anchors.weight_param] if anchors is not None and not anchors.tied else []
    if c.model == "recvae":
        phases = [
            Phase(
                "encoder",
                [*model.encoder_parameters(), *anchor_params],
                c.rho,
                c.enc_epochs,
                True,
                True,
                model.update_prior,
            ),
            # Decoder passes see clean input and no KL, as in the reference.
            Phase("decoder", list(model.decoder_parameters()), 1.0, 1, False, False),
        ]
    else:
        use_kl = c.model not in KL_FREE_MODELS
        phases = [Phase("joint", [*model.parameters(), *anchor_params], c.rho, 1, use_kl, True)]
    for p in phases:
        p.optimizer = adam(p.parameters, c.lr)
    return phases


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass
class RunState:
    """Where a run stands. Epochs are numbered from 1 here as in every file and message (:data:`EPOCH_BASE`):
    ``best_epoch`` 0 means none yet."""

    epoch: int = 0  # epochs finished
    updates: int = 0
    best_value: float = -math.inf
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)


EPOCH_BASE = 1
"""Epochs are numbered from 1 in ``metrics.jsonl``, ``best.pt``, messages and every job's output: epoch ``n`` is
the ``n``-th epoch, the run's state after ``n`` epochs. Runs written before this convention numbered
``metrics.jsonl`` and ``best.pt`` from 0; :func:`one_based` reads both."""


def one_based(history: list[dict]) -> tuple[list[dict], bool]:
    """A run's epoch records numbered from 1, and whether they were numbered from 0 (written before
    :data:`EPOCH_BASE`; the first record of such a run says ``epoch`` 0)."""
    if not history or history[0].get("epoch") != 0:
        return history, False
    return [{**h, "epoch": int(h["epoch"]) + 1} for h in history], True


def read_history(run: Path) -> list[dict]:
    """The epoch records of a run folder's ``metrics.jsonl``, numbered from 1 (:func:`one_based`); ``[]`` when
    the file is missing."""
    log = Path(run) / "metrics.jsonl"
    lines = log.read_text().splitlines() if log.is_file() else []
    return one_based([json.loads(line) for line in lines if line.strip()])[0]


def beta_at(config: TrainConfig, updates: int, updates_per_epoch: int) -> float:
    """``min(beta_cap, updates / anneal_steps)``; with ``anneal_epochs`` the steps are rescaled so that the
    cap is reached after ``anneal_epochs`` epochs."""
    steps = config.anneal_steps
    if config.anneal_epochs is not None:
        steps = max(1e-12, config.anneal_epochs * updates_per_epoch / max(config.beta_cap, 1e-12))
    return min(config.beta_cap, updates / steps)


def config_key(config: TrainConfig) -> str:
    """Hash (12 hex digits) of the resolved configuration; the device does not change the trained model's identity."""
    blob = replace(config.resolved(), device="auto").to_json()
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def split_config_of(config: TrainConfig) -> SplitConfig | None:
    """The split configuration of a run: the dataset's preset with the held-out size and the data options of
    the run (:attr:`TrainConfig.data`) put in; None when the run changed none of them."""
    data = {k: v for k, v in (config.data or {}).items() if k in SPLIT_DESTS}
    if config.heldout is None and not data:
        return None
    if config.heldout is not None:
        data["n_heldout"] = config.heldout if config.heldout < 1 else int(config.heldout)
    return replace(default_config(config.dataset), **data)


def table_options_of(config: TrainConfig) -> TableOptions | None:
    """The column options of a ``csv:``/``parquet:`` run (:class:`models.data.TableOptions`), None otherwise."""
    if not config.dataset.startswith(TABLE_PREFIXES):
        return None
    return TableOptions(**{k: v for k, v in (config.data or {}).items() if k in TABLE_DESTS})


def load_run_split(config: TrainConfig, progress: bool = False) -> Split:
    """The split a run was trained on: its dataset, path, held-out size and data options."""
    return load_split(
        config.dataset,
        path=Path(config.dataset_path) if config.dataset_path else None,
        config=split_config_of(config),
        table=table_options_of(config),
        progress=progress,
    )


FEW_UPDATES = 10
"""Fewer optimiser updates per epoch than this are announced at the start of a run (small data at the reference
batch size: 483 users at batch 500 is one update per epoch) with the batch size that gives this many."""
LOCK_NAME = ".lock"
SAFE_ON_RESUME = ("epochs", "device", "eval_batch_size")
"""Settings a resumed run may change: they do not change what the finished epochs computed."""
MODEL_CODE_VERSION = 2
"""Version of the training code's results: bump it whenever a change to ``models/`` changes what a configuration
trains (architecture, loss, initialisation, data order, masks), so the run cache never serves an older model.
2: self-verifying checkpoints, the run cache keyed on the split's content (issue 9)."""


def split_fingerprint(split: Split) -> str:
    """sha256 (16 hex digits) of a split's content: every CSR array of train, validation and test and the item
    count. Two splits with the same fingerprint train and evaluate identically."""
    h = hashlib.sha256()
    for mat in (
        split.train,
        split.validation.fold_in,
        split.validation.targets,
        split.test.fold_in,
        split.test.targets,
    ):
        m = mat.tocsr()
        h.update(np.asarray(m.shape, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(m.indptr, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(m.indices, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def run_lock(out: Path) -> FolderLock:
    """The lock of a run folder (``out/.lock``); not yet acquired."""
    return FolderLock(Path(out) / LOCK_NAME, f"run folder {out}")


def read_run_config(run: Path) -> tuple[TrainConfig, dict]:
    """The configuration of a run folder (``config.json``) and its ``derived`` section, checked.

    Raises
    ------
    ConfigError
        One line when the file is missing, not JSON, or not a configuration of this toolkit.
    """
    path = Path(run) / "config.json"
    if path.is_dir() or not path.exists():
        raise ConfigError(f"{run} is not a run folder (no config.json); train one with models.train --out {run}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); restore it or start a new run") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a table of settings; restore it or start a new run")
    derived = raw.pop("derived", {}) or {}
    try:
        config = TrainConfig.from_json(raw)
        config.validate()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config, derived


def changed_fields(a: TrainConfig, b: TrainConfig, ignore: tuple[str, ...] = ()) -> dict[str, tuple]:
    """``{field: (a's value, b's value)}`` for the resolved fields that differ, ``ignore`` left out."""
    ra, rb = a.resolved(), b.resolved()
    return {
        f.name: (getattr(ra, f.name), getattr(rb, f.name))
        for f in fields(TrainConfig)
        if f.name not in ignore and getattr(ra, f.name) != getattr(rb, f.name)
    }


def _config_in(saved: dict, path: Path, fix: str) -> TrainConfig:
    """The configuration stored in a checkpoint or ``best.pt``; a file without a valid one is damaged."""
    try:
        return TrainConfig.from_json(saved["config"])
    except (KeyError, TypeError, ConfigError):
        raise DamagedFile(f"{path}: not written by models.train (no valid configuration in it); {fix}") from None


def clear_run(out: Path) -> None:
    """Empty a run folder (files and temp files of killed writes), keeping its lock file, held by the caller."""
    for path in Path(out).iterdir():
        if path.name != LOCK_NAME:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


_NOTED: set[str] = set()


def _note(message: str, once: bool = False) -> None:
    """Print a note; ``once``: only the first time this process says it (the same data's note for each run of a
    tuning study)."""
    if once and message in _NOTED:
        return
    _NOTED.add(message)
    print(f"note: {message}", file=sys.stderr)


def train(
    config: TrainConfig,
    out: Path,
    *,
    resume: bool = False,
    split: Split | None = None,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    lock: FolderLock | None = None,
    on_epoch: Callable[[dict], bool] | None = None,
) -> RunState:
    """Train a model and write the run folder ``out``, as its only writer.

    Parameters
    ----------
    config : TrainConfig
    out : Path
        Run folder. A folder holding a run with a checkpoint needs ``resume``; one whose run never finished an
        epoch (no ``checkpoint.pt``) is started again, with or without ``resume``.
    resume : bool
        Continue from ``out/checkpoint.pt``. ``config`` may differ from the run's only in
        :data:`SAFE_ON_RESUME` (e.g. more epochs); the change is recorded in ``config.json``.
    split : Split, optional
        Use this split instead of loading ``config.dataset`` (tests, notebooks).
    progress : bool
        tqdm bar with loss, beta, lambda_A and validation NDCG@100.
    stop_after_epochs : int, optional
        Return after this many epochs of *this call* (simulates an interrupted run in tests).
    lock : FolderLock, optional
        The run folder's lock (:func:`run_lock`), already held by the caller; otherwise ``train`` takes it and
        raises :class:`models.cli.FolderBusy` naming the process that holds it.
    on_epoch : callable, optional
        Called on rank 0 with each epoch's record (the line appended to ``metrics.jsonl``: losses, beta,
        lambda_A, ``val_ndcg@100``, ...) once the epoch is checkpointed; returning True ends the run there, on
        every rank (a pruned tuning trial, :mod:`models.tune`), resumable like any interrupted run. TensorBoard
        logging (``--tensorboard``) is such a callback.

    Raises
    ------
    ConfigError
        Impossible configuration, nothing to resume, a run that cannot be continued with ``config``.
    models.io.DamagedFile
        A truncated, altered or foreign ``checkpoint.pt``.
    """
    config.validate()
    rank, _ = _world()
    own = run_lock(out).acquire() if rank == 0 and lock is None else None
    try:
        return _train(config, Path(out), resume, split, progress, stop_after_epochs, on_epoch)
    finally:
        if own is not None:
            own.release()


def _train(
    config: TrainConfig,
    out: Path,
    resume: bool,
    split: Split | None,
    progress: bool,
    stop_after_epochs: int | None,
    on_epoch: Callable[[dict], bool] | None,
) -> RunState:
    from tqdm.auto import tqdm

    from models.pia import ItemAnchors, LambdaSchedule, alignment_loss

    c = config.resolved()
    rank, world = _world()
    ckpt_path = out / "checkpoint.pt"
    started = (out / "config.json").exists()
    if ckpt_path.exists():
        if not resume:
            done = len((out / "metrics.jsonl").read_text().splitlines()) if (out / "metrics.jsonl").is_file() else 0
            raise ConfigError(
                f"{out} already holds a run ({done} epoch(s) done); pass --resume to continue it, or choose another "
                "--out for a new run"
            )
    elif resume and not started:
        raise ConfigError(f"{out}: no run to resume there; start it without --resume")
    elif started or resume:
        # killed (or failed) before its first checkpoint: nothing worth keeping, start it again
        if rank == 0:
            _note(f"{out}: the run there never finished an epoch; starting it again from epoch 1")
            clear_run(out)
        resume = False
    if rank == 0:
        for tmp in out.glob(".*.tmp"):  # left by a write that was killed; we are the only writer now
            tmp.unlink(missing_ok=True)
    if split is None:
        if rank == 0:
            split = load_run_split(c, progress=progress)
        if world > 1:
            dist.barrier()  # rank 0 builds the cached split first
        if split is None:
            split = load_run_split(c)
    device = resolve_device(c.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    model = build_model(c, split.n_items, split.train.shape[0]).to(device)
    anchors = None
    if c.pia > 0:
        tied = getattr(model, "decoder_output", None) if c.pia_anchors == "tied" else None
        anchors = ItemAnchors(split.n_items, c.latent_dim, c.pia_init_std, tied_to=tied).to(device)
    phases = make_phases(c, model, anchors)
    schedule = LambdaSchedule(c.pia, c.pia_warmup)
    generator = torch.Generator().manual_seed(c.seed + 1)
    precision, precision_record = _run_precision(c, out, resume, device, world)
    n_train = split.train.shape[0]
    updates_per_epoch = math.ceil(n_train / c.batch_size)
    fingerprint = split_fingerprint(split)
    state = RunState()

    if resume:
        fix = "restore it, or delete the run folder and train again"
        ckpt = load_verified(ckpt_path, map_location=device, fix=fix)
        saved = _config_in(ckpt, ckpt_path, fix)
        changed = changed_fields(saved, c, ignore=SAFE_ON_RESUME)
        if changed:
            diff = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise ConfigError(f"{out}: the run was trained with other settings ({diff}); resume with the run's own")
        run_split = json.loads((out / "split.json").read_text()) if (out / "split.json").is_file() else {}
        if run_split.get("fingerprint") not in (None, fingerprint):
            raise ConfigError(
                f"{out}: the split of {c.dataset} changed since this run started (fingerprint "
                f"{run_split['fingerprint']} -> {fingerprint}); start a new run in another --out"
            )
        try:
            model.load_state_dict(ckpt["model"])
            if anchors is not None and not anchors.tied:
                anchors.load_state_dict(ckpt["anchors"])
            for p, s in zip(phases, ckpt["optimizers"], strict=True):
                p.optimizer.load_state_dict(s)
            generator.set_state(ckpt["generator"])
            history, zero_based = one_based(ckpt["history"])
            best_epoch = ckpt["best_epoch"] + (1 if zero_based else 0)
            state = RunState(ckpt["epoch"], ckpt["updates"], ckpt["best_value"], best_epoch, history)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            reason = " ".join(str(exc).split())[:120]
            raise DamagedFile(f"{ckpt_path}: does not fit this model ({reason}); {fix}") from None
        if rank == 0:
            changes = changed_fields(saved, c)
            _, derived = read_run_config(out)
            if changes:
                derived.setdefault("changes_on_resume", []).append(
                    {"at_epoch": state.epoch, **{k: [a, b] for k, (a, b) in changes.items()}}
                )
                what = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changes.items())
                _note(f"{out}: resuming with {what}")
            atomic_write_json(out / "config.json", {**c.to_json(), "derived": derived})
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        derived = {
            "n_items": split.n_items,
            "train_users": n_train,
            "updates_per_epoch": updates_per_epoch,
            "world_size": world,
            "torch": torch.__version__,
            "model_code_version": MODEL_CODE_VERSION,
        }
        if c.precision != "fp32":
            derived["precision"] = precision_record
        if updates_per_epoch < FEW_UPDATES:
            suggested = max(1, n_train // FEW_UPDATES)
            derived["few_updates"] = {"updates_per_epoch": updates_per_epoch, "suggested_batch_size": suggested}
            message = (
                f"{n_train} training users at --batch-size {c.batch_size} make {updates_per_epoch} update(s) per "
                f"epoch (fewer than {FEW_UPDATES}); --batch-size {suggested} gives {FEW_UPDATES}"
            )
            if c.model == "multvae" and c.anneal_epochs is None:
                final = beta_at(c, c.epochs * updates_per_epoch, updates_per_epoch)
                message += (
                    f"; the step schedule of beta ({c.anneal_steps:,} updates) reaches only {final:.3g} of its cap "
                    f"{c.beta_cap:g} by epoch {c.epochs}: --anneal-epochs sets it in epochs"
                )
            _note(message, once=True)
        atomic_write_json(out / "config.json", {**c.to_json(), "derived": derived})
        r = split.report
        atomic_write_json(
            out / "split.json",
            {
                "dataset": c.dataset,
                "fingerprint": fingerprint,
                "cache": r.get("cache"),
                "acquisition": r.get("acquisition"),
                "config": r.get("config"),
                "split": r.get("split"),
            },
        )
    if rank == 0:
        # metrics.jsonl always mirrors the checkpointed history (drops lines of an epoch that was killed).
        lines = "".join(json.dumps(h) + "\n" for h in state.history)
        atomic_write_bytes(out / "metrics.jsonl", lines.encode())

    bar = tqdm(
        range(state.epoch, c.epochs),
        desc=f"{c.model} {c.dataset}",
        disable=not progress or rank != 0,
        initial=state.epoch,
        total=c.epochs,
    )
    done_this_call = 0
    for epoch in bar:
        start = time.perf_counter()
        lam = schedule.value(epoch)
        sums = {"nll": 0.0, "kl": 0.0, "kl_weighted": 0.0, "pia": 0.0}
        n_seen = 0
        beta = beta_at(c, state.updates, updates_per_epoch)
        for phase_idx, phase in enumerate(phases):
            for rep in range(phase.repeats):
                order = np.random.default_rng([c.seed, epoch, phase_idx, rep]).permutation(n_train)
                for b0 in range(0, n_train, c.batch_size):
                    rows = split.train[order[b0 : b0 + c.batch_size]]
                    bsz = rows.shape[0]
                    users = order[b0 : b0 + c.batch_size]  # training rows: CDAE's user vectors
                    full = make_batch(rows, rho=phase.rho, mode=c.mask_mode, generator=generator, users=users)
                    eps = torch.randn(bsz, c.latent_dim, generator=generator)
                    lo, hi = rank * bsz // world, (rank + 1) * bsz // world
                    batch = full.rows(lo, hi).to(device)
                    beta = beta_at(c, state.updates, updates_per_epoch)
                    with autocast(precision, device):  # bf16: the dense layers only (models.precision)
                        fwd = model.forward_train(batch, eps[lo:hi].to(device), compute_kl=phase.use_kl)
                    per_user = fwd.nll
                    kl_term = torch.zeros((), device=device)
                    if phase.use_kl:
                        weights = model.kl_weights(batch, beta).to(device)
                        kl_term = (weights * fwd.kl).sum()
                    pia_term = torch.zeros((), device=device)
                    if anchors is not None and phase.use_pia and lam > 0:
                        pia_term = alignment_loss(fwd.mu, fwd.logvar, anchors.weight, batch).sum()
                    loss = (per_user.sum() + kl_term + lam * pia_term) / bsz
                    if c.weight_decay > 0:
                        loss = loss + c.weight_decay * model.weight_penalty() / world
                    model.zero_grad(set_to_none=True)
                    if anchors is not None:
                        anchors.zero_grad(set_to_none=True)
                    loss.backward()
                    if world > 1:
                        for p in phase.parameters:
                            if p.grad is None:
                                p.grad = torch.zeros_like(p)
                            dist.all_reduce(p.grad)
                    phase.optimizer.step()
                    state.updates += 1
                    if phase.name != "decoder":
                        sums["nll"] += float(per_user.sum().detach())
                        sums["kl"] += float(fwd.kl.sum().detach())
                        sums["kl_weighted"] += float(kl_term.detach())
                        sums["pia"] += float(pia_term.detach())
                        n_seen += hi - lo
            if phase.after is not None:
                phase.after()
        record = {"epoch": epoch + EPOCH_BASE, "updates": state.updates, "beta": beta, "lambda_a": lam, "seconds": 0.0}
        if world > 1:
            keys = ["nll", "kl", "kl_weighted", "pia"]
            totals = torch.tensor([sums[k] for k in keys] + [float(n_seen)], dtype=torch.float64)
            dist.all_reduce(totals)
            sums.update({k: float(v) for k, v in zip(keys, totals[:-1], strict=True)})
            n_seen = int(totals[-1])
        n_seen = max(n_seen, 1)
        record.update({"nll": sums["nll"] / n_seen, "kl": sums["kl"] / n_seen, "pia": sums["pia"] / n_seen})
        # The objective actually minimised (RecVAE weighs its KL by gamma |x_u| rather than beta).
        record["loss"] = record["nll"] + sums["kl_weighted"] / n_seen + lam * record["pia"]
        values = [0.0]
        if rank == 0:
            ev = evaluate(model.score, split.validation, metrics=VALIDATION_METRICS, batch_size=c.eval_batch_size)
            summary = ev.summary()
            for m in VALIDATION_METRICS:
                record[f"val_{m}"] = summary[m]["mean"]
            values = [summary["ndcg@100"]["mean"]]
        if world > 1:
            dist.broadcast_object_list(values, src=0)
        value = values[0]
        state.epoch = epoch + 1
        record["seconds"] = round(time.perf_counter() - start, 3)
        state.history.append(record)
        if value > state.best_value:
            state.best_value, state.best_epoch = value, record["epoch"]
            if rank == 0:
                save_verified(
                    out / "best.pt",
                    {
                        "model": model.state_dict(),
                        "epoch": record["epoch"],
                        "config": c.to_json(),
                        "val_ndcg@100": value,
                        # the PIA anchors of the best epoch (tied ones too), for Proposition 3.1 checks; unused
                        # by inference
                        "anchors": anchors.weight.detach().cpu() if anchors is not None else None,
                    },
                )
        if rank == 0:
            save_verified(
                ckpt_path,
                {
                    "config": c.to_json(),
                    "model": model.state_dict(),
                    "anchors": anchors.state_dict() if anchors is not None and not anchors.tied else None,
                    "optimizers": [p.optimizer.state_dict() for p in phases],
                    "generator": generator.get_state(),
                    "epoch": state.epoch,
                    "updates": state.updates,
                    "best_value": state.best_value,
                    "best_epoch": state.best_epoch,
                    "history": state.history,
                },
            )
            with (out / "metrics.jsonl").open("a") as fh:
                fh.write(json.dumps(record) + "\n")
        bar.set_postfix(loss=f"{record['loss']:.1f}", beta=f"{beta:.3f}", lambda_A=f"{lam:g}", val_ndcg=f"{value:.4f}")
        done_this_call += 1
        stop = [bool(on_epoch(record)) if on_epoch is not None and rank == 0 else False]
        if world > 1 and on_epoch is not None:
            dist.broadcast_object_list(stop, src=0)
        if stop[0] or (stop_after_epochs is not None and done_this_call >= stop_after_epochs):
            break
    bar.close()
    if world > 1:
        # leave together: rank 0 may still be writing the run's files while the others return, and a rank that
        # tears its process group down while a peer still holds gloo work in flight can abort at exit (SIGABRT
        # seen once in CI); after the barrier no collective is pending on any rank
        dist.barrier()
    return state


def _run_precision(c: TrainConfig, out: Path, resume: bool, device: torch.device, world: int) -> tuple[str, dict]:
    """The precision this run trains in: a resumed run keeps the one it started with (``derived.precision``), a
    new ``auto`` run decides once (:func:`models.precision.resolve_precision`) and every rank takes rank 0's
    choice."""
    if resume and c.precision == "auto":
        _, derived = read_run_config(out)
        record = derived.get("precision") or {}
        if record.get("chosen") in ("fp32", "bf16"):
            return record["chosen"], record
    chosen, record = resolve_precision(c.precision, device)
    if world > 1:
        shared = [chosen, record]
        dist.broadcast_object_list(shared, src=0)
        chosen, record = shared
    return chosen, record


def run_progress(run: Path) -> dict:
    """How far a run folder got: ``epochs_done`` (lines of ``metrics.jsonl``), ``epochs_planned`` (its config),
    ``finished`` and ``best_epoch`` (the epoch of ``best.pt``, the best validation NDCG@100 of the history)."""
    config, _ = read_run_config(run)
    history = read_history(run)
    done, planned = len(history), config.resolved().epochs
    best = max(history, key=lambda h: h.get("val_ndcg@100", -math.inf)) if history else None
    return {
        "epochs_done": done,
        "epochs_planned": planned,
        "finished": done >= planned,
        "best_epoch": int(best["epoch"]) if best else None,
    }


def load_anchors(run: Path) -> np.ndarray | None:
    """The PIA item anchors ``E`` (shape (I, d), float64) of a run's best epoch, or None for a run without PIA or
    one whose ``best.pt`` predates stored anchors. ``best.pt`` is read verified with ``weights_only=True``."""
    best = load_verified(Path(run) / "best.pt", map_location="cpu", fix="train the run again")
    anchors = best.get("anchors") if isinstance(best, dict) else None
    return None if anchors is None else anchors.double().numpy()


def load_trained(run: Path, device: str | torch.device = "cpu") -> tuple[AutoencoderBase, TrainConfig]:
    """The best-epoch model of a run folder and its configuration (anchors are not needed for inference).

    ``best.pt`` is read with ``weights_only=True`` and its checksum verified (:func:`models.io.load_verified`);
    its configuration must be the one in ``config.json`` (up to :data:`SAFE_ON_RESUME`).

    Raises
    ------
    ConfigError
        Not a run folder, or no epoch finished yet.
    models.io.DamagedFile
        ``best.pt`` truncated, altered, foreign, or written by another configuration than ``config.json``.
    """
    run = Path(run)
    config, derived = read_run_config(run)
    if not (run / "best.pt").exists():
        raise ConfigError(f"{run}: no best.pt yet (no epoch finished); train or resume it with models.train")
    fix = f"resume the run (python -m models.train --out {run} --resume) or train it again"
    best = load_verified(run / "best.pt", map_location=device, fix=fix)
    saved = _config_in(best, run / "best.pt", fix)
    changed = changed_fields(saved, config, ignore=SAFE_ON_RESUME)
    if changed:
        diff = ", ".join(f"{k} {a!r} vs {b!r}" for k, (a, b) in changed.items())
        raise DamagedFile(f"{run}: best.pt and config.json describe different runs ({diff}); train it again")
    model = build_model(config, derived["n_items"], derived.get("train_users"))
    try:
        model.load_state_dict(best["model"])
    except (KeyError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise DamagedFile(f"{run / 'best.pt'}: does not fit the model of config.json ({reason}); {fix}") from None
    return model.to(device).eval(), config

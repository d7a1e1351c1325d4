"""Experiment tracking: each epoch's record written as TensorBoard scalars (``--tensorboard DIR``).

``EpochLog(DIR)`` is an ``on_epoch`` callback of :func:`models.trainer.train`: for every epoch it writes, with the
epoch number as the step, the training terms under ``train/`` (``loss``, ``nll``, ``kl``, ``pia``), the schedule
under ``schedule/`` (``beta``, ``lambda_a``), the validation metrics under ``validation/`` (``ndcg@100``,
``recall@20``, ...) and ``time/seconds``. The events are PyTorch's TensorBoard writer's
(:class:`torch.utils.tensorboard.SummaryWriter`), so ``tensorboard --logdir DIR`` shows them and
:func:`read_scalars` reads them back. A resumed run appends the epochs it trains to the same folder.
"""

from __future__ import annotations

from pathlib import Path

from models.trainer import ConfigError

GROUPS = {"loss": "train", "nll": "train", "kl": "train", "pia": "train", "beta": "schedule", "lambda_a": "schedule"}
"""Record key -> TensorBoard group; ``val_<metric>`` goes to ``validation/<metric>``, ``seconds`` to ``time/``."""


def scalar_tag(key: str) -> str | None:
    """The TensorBoard tag of a ``metrics.jsonl`` key, or None for keys that are not logged (``epoch``, ``updates``)."""
    if key in GROUPS:
        return f"{GROUPS[key]}/{key}"
    if key.startswith("val_"):
        return f"validation/{key[len('val_') :]}"
    if key == "seconds":
        return "time/seconds"
    return None


class EpochLog:
    """``on_epoch`` callback writing each epoch's record to TensorBoard event files in ``folder``; never stops a run.

    Parameters
    ----------
    folder : Path
        Log folder (created); ``tensorboard --logdir folder`` shows it.
    """

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # torch's writer needs the tensorboard package
            raise ConfigError(f"--tensorboard needs the tensorboard package ({exc}); pip install tensorboard") from None
        try:
            self.writer = SummaryWriter(log_dir=str(folder))
        except OSError as exc:
            raise ConfigError(f"--tensorboard {folder}: cannot write there ({exc.strerror or exc})") from None

    def __call__(self, record: dict) -> bool:
        step = int(record["epoch"])
        for key, value in record.items():
            tag = scalar_tag(key)
            if tag is not None and isinstance(value, int | float):
                self.writer.add_scalar(tag, float(value), global_step=step)
        self.writer.flush()  # an epoch is in the events as soon as it is checkpointed
        return False

    def close(self) -> None:
        self.writer.close()


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in the TensorBoard event files of ``folder``: tag -> [(step, value), ...] by step.

    Read with TensorBoard's own event reader; a step written twice (an epoch logged again) keeps the last value.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every event, not a sample
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        by_step = {e.step: e.value for e in acc.Scalars(tag)}
        out[tag] = sorted(by_step.items())
    return out

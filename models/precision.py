"""Training precision: float32, or bfloat16 autocast of the dense layers where the hardware has bf16 matrix units.

``--precision bf16`` runs the model's forward pass under ``torch.autocast(dtype=torch.bfloat16)``: the matrix
products (the encoder's dense layers and the decoder, ``(B x H) @ (H x I)``, the bulk of the flops) run in bf16,
while what is numerically sensitive stays float32: the parameters and Adam's state (autocast never changes
them: bf16 copies are made per product, so the optimizer steps float32 master weights), the log-sum-exp of the
multinomial likelihood, the KL term and PIA's closed form (the models upcast the layers' outputs with
:func:`full_precision` before computing them) and every evaluation (scores are computed outside autocast, so
bf16 ties cannot change a ranking).

``--precision auto`` picks bf16 only where it is native and faster: a CUDA device that supports bf16, or a CPU
that reports ``avx512_bf16`` or ``amx_bf16``, and in either case a micro-benchmark at start-up (a decoder-shaped
product in each precision) that shows bf16 at least :data:`AUTO_MIN_SPEEDUP` times faster; otherwise float32.
Without native units bf16 is emulated and far slower: on the AMD EPYC machines here, which lack ``avx512_bf16``,
a (500 x 600) @ (600 x 20,108) product runs at 34.7 GFLOP/s in float32 and 1.7 GFLOP/s in bf16. What was chosen,
and why, is recorded in the run's ``config.json`` (``derived.precision``).
"""

from __future__ import annotations

import contextlib
import time
from functools import lru_cache
from pathlib import Path

from models.lazy import lazy_import

torch = lazy_import("torch")

PRECISIONS = ("fp32", "bf16", "auto")
AUTO_MIN_SPEEDUP = 1.2
"""``auto`` takes bf16 only if the micro-benchmark's bf16 product is at least this much faster than float32."""
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
BENCH_SHAPE = (256, 600, 2048)
"""(batch, hidden, items) of the start-up product: the decoder's shape with a slice of the item axis (a few ms
with native units; about 1.5 s for the four emulated bf16 products on the machines here)."""


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 if autocast made it bf16 or fp16; any other tensor unchanged (float64 stays float64)."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def _cpuinfo(key: str, cpuinfo: Path) -> str:
    """The value of the first ``key`` line of Linux ``/proc/cpuinfo`` (empty elsewhere or when absent)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.split(":", 1)[0].strip() == key:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU feature flags the kernel reports (empty where there is no ``/proc/cpuinfo``)."""
    return set(_cpuinfo("flags", cpuinfo).split())


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name as the kernel reports it, or ``""``."""
    return _cpuinfo("model name", cpuinfo)


def gemm_rate(dtype: torch.dtype, device: torch.device, shape: tuple[int, int, int] = BENCH_SHAPE) -> float:
    """GFLOP/s of a ``(b x h) @ (h x i)`` product in ``dtype`` on ``device`` (best of 3 after a warm-up)."""
    b, h, i = shape
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(b, h, generator=gen).to(device=device, dtype=dtype)
    w = torch.randn(h, i, generator=gen).to(device=device, dtype=dtype)
    best = float("inf")
    for rep in range(4):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        x @ w
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if rep:  # the first product warms up (allocations, kernel choice)
            best = min(best, time.perf_counter() - start)
    return 2.0 * b * h * i / best / 1e9


@lru_cache(maxsize=8)
def _auto_choice(device_text: str) -> tuple[str, tuple]:
    device = torch.device(device_text)
    if device.type == "cuda":
        native = bool(torch.cuda.is_bf16_supported())
        why = f"CUDA {torch.cuda.get_device_name(device)}: bf16 {'supported' if native else 'not supported'}"
    else:
        found = sorted(cpu_flags() & set(BF16_CPU_FLAGS))
        native = bool(found)
        why = f"CPU flags {', '.join(found)}" if found else f"the CPU reports none of {', '.join(BF16_CPU_FLAGS)}"
    fp32 = gemm_rate(torch.float32, device)
    bf16 = gemm_rate(torch.bfloat16, device)
    chosen = "bf16" if native and bf16 >= AUTO_MIN_SPEEDUP * fp32 else "fp32"
    record = (
        ("native_bf16", native),
        ("reason", why),
        ("fp32_gflops", round(fp32, 1)),
        ("bf16_gflops", round(bf16, 1)),
        ("min_speedup", AUTO_MIN_SPEEDUP),
    )
    return chosen, record


def resolve_precision(precision: str, device: torch.device) -> tuple[str, dict]:
    """The precision a run trains in, and the record ``config.json`` keeps of the choice.

    ``fp32`` and ``bf16`` are taken as given; ``auto`` is ``bf16`` only with native bf16 units on ``device`` and a
    measured speed-up of at least :data:`AUTO_MIN_SPEEDUP` (module docstring), decided once per process and device.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision, {"requested": precision, "chosen": precision}
    chosen, record = _auto_choice(str(device))
    return chosen, {"requested": "auto", "chosen": chosen, **dict(record)}


def autocast(chosen: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context the forward pass of a training step runs in: bf16 autocast, or nothing for float32."""
    if chosen == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()

"""One figure style for every job: seaborn theme, a colour-blind-safe palette, PNG + PDF output.

Palette
-------
The categorical palette is Okabe & Ito's (``"okabe-ito"``), designed to stay distinguishable under the
common colour-vision deficiencies (protanopia, deuteranopia, tritanopia). It is ordered for a white
background: blue, vermillion, bluish green, reddish purple, orange, sky blue, yellow, black; yellow comes
late because it is faint on white.

Use
---
Plotting functions build a :class:`matplotlib.figure.Figure` directly (no pyplot state, so jobs run headless
and nothing leaks between figures) inside :func:`styled`, and jobs write them with :func:`savefig`::

    with styled():
        fig = new_figure(1, 2)
        ...
    savefig(fig, out_dir, "probability_vs_rho")   # out_dir/probability_vs_rho.png and .pdf

References
----------
Okabe & Ito, "Color Universal Design (CUD): how to make figures and presentations that are friendly to
colorblind people", 2008 (https://jfly.uni-koeln.de/color/).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from models.io import atomic_write_bytes
from models.lazy import lazy_import

mpl = lazy_import("matplotlib")
sns = lazy_import("seaborn")
mfigure = lazy_import("matplotlib.figure")

PALETTE_NAME = "okabe-ito"
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
    "#000000",  # black
)
DPI = 150
FIGURE_FORMATS = ("png", "pdf")
BLUE, VERMILLION, GREEN, PURPLE, ORANGE, SKY_BLUE, YELLOW, BLACK = OKABE_ITO

# One meaning, one colour, in every figure of every job: a pair stratum, an activity cohort or a model keeps its
# colour whether masking_contraction, local_vs_global, sharing_radius, pia_geometry, cohorts or reproduce draws it.
STRATUM_COLORS: dict[str, str] = {
    "near": BLUE,
    "latent-near": BLUE,  # the latent-space kNN plays the role of "near" where no input distance is used
    "far": VERMILLION,
    "far-related": GREEN,
    "planted": PURPLE,
    "random": ORANGE,
}
"""Colour of each pair stratum (its order is the order strata are listed in legends)."""
STRATUM_LABELS: dict[str, str] = {
    "near": "near (u's kNN in input)",
    "latent-near": "near (u's kNN in latent space)",
    "far": "far (beyond u's median)",
    "far-related": "far but related",
    "planted": "planted far-related",
    "random": "random",
}
"""Legend text of each pair stratum."""
COHORT_SLOTS: tuple[str, ...] = (GREEN, ORANGE, PURPLE, SKY_BLUE, BLUE, VERMILLION, BLACK, YELLOW)
"""Colours of activity cohorts from the least to the most active (they avoid blue and vermillion, which the model
comparisons use, as long as there are at most four cohorts)."""
MODEL_COLORS: dict[str, str] = {
    # each model and its PIA variant share a hue (dark / light), so pairs read together in every figure
    "EASE": BLACK,
    "Multi-VAE": VERMILLION,
    "Multi-VAE + PIA": ORANGE,
    "RecVAE": BLUE,
    "RecVAE + PIA": SKY_BLUE,
    "Multi-DAE": GREEN,
    # the baselines beyond the paper's VAE rows: the palette's last two colours, then two greys
    "CDAE": PURPLE,
    "RaCT": YELLOW,
    "WMF": "#606060",
    "BPR-MF": "#C0C0C0",
}
"""Colours of the results-table models (the two greys were chosen to stay at least as far from every palette colour
and each other, under each colour-vision deficiency, as the palette's own colours are: Delta E > 12)."""


def palette(n: int | None = None) -> list[str]:
    """The first ``n`` colours of the Okabe-Ito palette (all 8 by default), as hex strings.

    Raises
    ------
    ValueError
        If more colours are asked for than the palette holds (colours would repeat).
    """
    if n is None:
        return list(OKABE_ITO)
    if not 0 <= n <= len(OKABE_ITO):
        raise ValueError(
            f"the {PALETTE_NAME} palette has {len(OKABE_ITO)} colours, {n} were asked for; "
            "group categories or use line styles as well"
        )
    return list(OKABE_ITO[:n])


def category_colors(names: Sequence[str], fixed: Mapping[str, str]) -> dict[str, str]:
    """Colour of each name: its ``fixed`` colour if it has one, else the next palette colour no name has.

    Raises
    ------
    ValueError
        If the palette runs out of unused colours.
    """
    taken = {fixed[n] for n in names if n in fixed}
    spare = iter(c for c in OKABE_ITO if c not in taken)
    out = {}
    for n in names:
        if n not in fixed:
            try:
                out[n] = next(spare)
            except StopIteration:
                raise ValueError(f"the {PALETTE_NAME} palette has no unused colour left for {n!r}") from None
        else:
            out[n] = fixed[n]
    return out


def stratum_colors(strata: Sequence[str]) -> dict[str, str]:
    """Colours of pair strata (:data:`STRATUM_COLORS`); unknown strata take unused palette colours."""
    return category_colors(strata, STRATUM_COLORS)


def ordered_strata(strata: Iterable[str]) -> list[str]:
    """The distinct strata, the known ones in the order of :data:`STRATUM_COLORS`, then the others sorted."""
    names = set(strata)
    known = [s for s in STRATUM_COLORS if s in names]
    return known + sorted(names - set(known))


def model_colors(labels: Sequence[str]) -> dict[str, str]:
    """Colours of the results-table models (:data:`MODEL_COLORS`); unknown labels take unused palette colours."""
    return category_colors(labels, MODEL_COLORS)


def cohort_colors(cohorts: Sequence[str]) -> dict[str, str]:
    """Colours of activity cohorts given from the least to the most active (:data:`COHORT_SLOTS`)."""
    if len(cohorts) > len(COHORT_SLOTS):
        raise ValueError(f"at most {len(COHORT_SLOTS)} cohorts can be coloured, got {len(cohorts)}")
    return dict(zip(cohorts, COHORT_SLOTS, strict=False))


def rc_params() -> dict[str, object]:
    """The rcParams of the project style: seaborn ``whitegrid`` + ``paper`` context and the palette."""
    rc: dict[str, object] = {}
    rc.update(sns.axes_style("whitegrid"))
    rc.update(sns.plotting_context("paper", font_scale=1.25))
    rc.update(
        {
            "axes.prop_cycle": mpl.cycler(color=list(OKABE_ITO)),
            "axes.titleweight": "bold",
            "axes.titlesize": 11,
            "axes.labelsize": 10.5,
            "legend.fontsize": 9,
            "legend.title_fontsize": 9.5,
            "legend.frameon": True,
            "legend.framealpha": 0.9,
            "figure.titlesize": 12,
            "figure.titleweight": "bold",
            "figure.dpi": 100,
            "savefig.dpi": DPI,
            "pdf.fonttype": 42,  # embed TrueType: text stays text in the PDF
            "lines.linewidth": 1.8,
            "image.cmap": "viridis",
        }
    )
    return rc


def apply_style() -> None:
    """Apply the project style globally (for notebooks; jobs use :func:`styled`)."""
    mpl.rcParams.update(rc_params())


@contextmanager
def styled() -> Iterator[None]:
    """Context in which figures are created and drawn with the project style (global state restored)."""
    with mpl.rc_context(rc_params()):
        yield


def new_figure(
    nrows: int = 1, ncols: int = 1, *, panel_size: tuple[float, float] = (4.6, 3.4), **kwargs
) -> mfigure.Figure:
    """A constrained-layout figure with ``nrows x ncols`` axes of about ``panel_size`` inches each.

    Returns the figure; its axes are ``fig.axes`` (row-major). Extra keyword arguments go to
    :meth:`matplotlib.figure.Figure.subplots` (``sharex``, ``sharey``, ...).
    """
    if nrows < 1 or ncols < 1:
        raise ValueError(f"a figure needs at least one row and one column of panels, got {nrows} x {ncols}")
    fig = mfigure.Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig


def savefig(fig: mfigure.Figure, out_dir: str | Path, name: str, formats: Sequence[str] = FIGURE_FORMATS) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.png`` and ``out_dir/name.pdf`` (atomically), at :data:`DPI`.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    out_dir : path
        Folder (created if needed).
    name : str
        File stem without extension or folder, e.g. ``"probability_vs_rho"``.
    formats : sequence of str
        Formats to write (default PNG and PDF).

    Returns
    -------
    list of Path
        The files written, in the order of ``formats``.
    """
    if not name or Path(name).name != name or Path(name).suffix.lower() in {f".{f}" for f in FIGURE_FORMATS}:
        raise ValueError(f"name must be a bare file stem such as 'probability_vs_rho', got {name!r}")
    out = Path(out_dir)
    written = []
    with styled():
        for fmt in formats:
            buf = io.BytesIO()
            # constrained layout already fits everything: no "tight" bbox, which would draw the figure twice
            fig.savefig(buf, format=fmt, dpi=DPI)
            written.append(atomic_write_bytes(out / f"{name}.{fmt}", buf.getvalue()))
    return written

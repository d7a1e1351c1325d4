"""The shared figure style: files written, colour-blind-safe palette, style applied and restored."""

from __future__ import annotations

import itertools

import matplotlib as mpl
import numpy as np
import pytest
from matplotlib.colors import to_hex, to_rgb

from analyses.results import MODEL_SPECS
from figures.style import (
    MODEL_COLORS,
    OKABE_ITO,
    PALETTE_NAME,
    STRATUM_COLORS,
    apply_style,
    category_colors,
    model_colors,
    new_figure,
    ordered_strata,
    palette,
    rc_params,
    savefig,
    stratum_colors,
    styled,
)

# Machado, Oliveira & Fernandes (2009), severity 1.0, applied to linear RGB.
_CVD = {
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
    "normal": np.eye(3).tolist(),
}
# Smallest CIELAB distance (Delta E 1976) tolerated between two palette colours, under each vision type.
_MIN_DELTA_E = 12.0


def _lab(colour: str, vision: str) -> np.ndarray:
    srgb = np.asarray(to_rgb(colour))
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    linear = np.clip(np.asarray(_CVD[vision]) @ linear, 0.0, 1.0)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    t = xyz / np.array([0.95047, 1.0, 1.08883])  # D65 white
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _min_delta_e(colours: list[str], vision: str) -> float:
    labs = [_lab(c, vision) for c in colours]
    return min(float(np.linalg.norm(a - b)) for a, b in itertools.combinations(labs, 2))


def test_palette_is_the_okabe_ito_palette():
    assert PALETTE_NAME == "okabe-ito"
    # Okabe & Ito (2008), in the order used here (yellow late: faint on white)
    published = {"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"}
    assert set(palette()) == published and len(palette()) == 8
    assert palette(3) == list(OKABE_ITO[:3])
    with pytest.raises(ValueError, match="8 colours"):
        palette(9)


@pytest.mark.parametrize("vision", list(_CVD))
def test_palette_stays_distinguishable_under_colour_vision_deficiency(vision):
    assert _min_delta_e(palette(), vision) > _MIN_DELTA_E


def test_distinguishability_check_rejects_a_red_green_palette():
    # the check above can fail: matplotlib's default red and green merge for deuteranopes
    assert _min_delta_e(["#d62728", "#2ca02c"], "normal") > 50
    assert _min_delta_e(["#d62728", "#2ca02c"], "deuteranopia") < _MIN_DELTA_E


@pytest.mark.parametrize("vision", list(_CVD))
def test_every_results_model_has_its_own_distinguishable_colour(vision):
    labels = sorted({spec.label for spec in MODEL_SPECS.values()} | {"RaCT"})
    colours = model_colors(labels)
    assert set(labels) <= set(MODEL_COLORS)  # fixed: a model keeps its colour in every figure
    assert len(set(colours.values())) == len(labels)
    assert _min_delta_e(list(colours.values()), vision) > _MIN_DELTA_E


def test_stratum_colours_are_fixed_and_distinct():
    fixed = stratum_colors(list(STRATUM_COLORS))
    assert stratum_colors(["far", "near"]) == {"far": fixed["far"], "near": fixed["near"]}
    strata = [s for s in STRATUM_COLORS if s != "latent-near"]  # latent-near shares near's colour on purpose
    both = stratum_colors([*strata, "other", "another"])
    assert len(set(both.values())) == len(both)
    assert fixed["latent-near"] == fixed["near"]


def test_category_colours_run_out_with_one_clear_error():
    with pytest.raises(ValueError, match="no unused colour left for 'x8'"):
        category_colors([f"x{i}" for i in range(9)], {})


def test_ordered_strata_lists_known_strata_first_and_each_once():
    assert ordered_strata(["zeta", "far", "near", "far", "alpha"]) == ["near", "far", "alpha", "zeta"]


def test_styled_applies_the_style_and_restores_the_previous_one():
    before = dict(mpl.rcParams)
    with styled():
        cycle = [to_hex(c["color"]).upper() for c in mpl.rcParams["axes.prop_cycle"]]
        assert cycle == [c.upper() for c in OKABE_ITO]
        assert mpl.rcParams["axes.grid"] is True  # seaborn whitegrid
        assert mpl.rcParams["savefig.dpi"] == rc_params()["savefig.dpi"]
        fig = new_figure(2, 3, panel_size=(2.0, 1.5))
        assert len(fig.axes) == 6
        assert tuple(fig.get_size_inches()) == pytest.approx((6.0, 3.0))
        line = fig.axes[0].plot([0, 1], [0, 1])[0]
        assert to_hex(line.get_color()).upper() == OKABE_ITO[0].upper()
    assert mpl.rcParams["axes.prop_cycle"] == before["axes.prop_cycle"]


def test_apply_style_sets_global_rc_params():
    with mpl.rc_context():
        apply_style()
        assert [to_hex(c["color"]).upper() for c in mpl.rcParams["axes.prop_cycle"]][:2] == [
            OKABE_ITO[0].upper(),
            OKABE_ITO[1].upper(),
        ]


def test_savefig_writes_png_and_pdf(tmp_path):
    with styled():
        fig = new_figure()
        ax = fig.axes[0]
        ax.plot([0, 1, 2], [1, 0, 1], label="curve")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_title("a title")
        ax.legend()
    written = savefig(fig, tmp_path / "sub", "example")
    assert [p.name for p in written] == ["example.png", "example.pdf"]
    png, pdf = (p.read_bytes() for p in written)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["example.pdf", "example.png"]  # no temp files


@pytest.mark.parametrize("name", ["", "a/b", "plot.png", "plot.PDF"])
def test_savefig_rejects_names_that_are_not_bare_stems(tmp_path, name):
    with pytest.raises(ValueError, match="bare file stem"):
        savefig(new_figure(), tmp_path, name)

"""The forest plots of paired comparisons (:mod:`ama.figures.forest`) and the figures drawn with them."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from ama.figures import control_charts, forest  # noqa: E402


def _labels(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]


def _notes(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_forest_draws_one_row_per_comparison_with_its_counts_and_the_zero_line():
    rows = pd.DataFrame(dict(name=["a - b", "c - d", "e - f"], value=[0.2, -0.3, 0.05], low=[0.1, -0.5, -0.1],
                             high=[0.3, -0.1, 0.2]))
    fig = forest.forest_figure(rows, "name", "value", "low", "high", notes=["n = 3", "n = 4", "n = 5"])
    assert fig.forest_rows == 3 and _labels(fig) == ["a - b", "c - d", "e - f"]
    assert _notes(fig) == ["n = 3", "n = 4", "n = 5"]
    ax = fig.axes[0]
    assert any(list(line.get_xdata()) == [0, 0] for line in ax.get_lines())  # the line of no difference
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0] == "0: no difference" and {"interval above 0", "interval below 0", "interval includes 0"} <= set(legend)
    colours = [line.get_color() for line in ax.get_lines() if len(line.get_xdata()) == 2 and line.get_xdata()[0] != 0]
    assert colours == ["C0", "C3", "0.45"]  # above, below, includes 0
    plt.close(fig)


def test_forest_panels_and_verdict_colours():
    rows = pd.DataFrame(dict(name=["x", "y", "z"], part=["p", "p", "q"], value=[0.2, 0.2, 0.2], low=[0.1, 0.1, 0.1],
                             high=[0.3, 0.3, 0.3], verdict=["holds", "inconclusive", "holds"]))
    fig = forest.forest_figure(rows, "name", "value", "low", "high", panel="part", verdict="verdict")
    assert len(fig.axes) == 2 and [ax.get_title(loc="left") for ax in fig.axes] == ["p", "q"]
    assert fig.forest_rows == 3
    # an interval above 0 whose exact test is not decided is drawn as undecided
    assert "0.45" in [line.get_color() for line in fig.axes[0].get_lines()]
    plt.close(fig)


def _location_summary():
    locations = ["frame", "ring8", "random", "strip"]
    return pd.DataFrame(dict(model="m", e=1, location=locations, mask_pixels=892, n_images=8,
                             frame_minus_fooled=[None, 0.1, -0.2, 0.3], gap_low=[None, -0.1, -0.4, 0.05],
                             gap_high=[None, 0.3, -0.05, 0.5], frame_only=[None, 2, 0, 3],
                             location_only=[None, 1, 2, 0], verdict=[None, "inconclusive", "does not hold", "holds"]))


def test_location_control_is_a_forest_of_the_frame_minus_each_location():
    fig = control_charts.location_control_figure(_location_summary())
    labels = _labels(fig)
    assert len(labels) == 3 and "frame minus scattered pixels" in labels  # "random" is not the random-frame baseline
    assert all("random" not in label for label in labels)
    assert any("only the frame fools 3, only the location 0" in n for n in _notes(fig))
    plt.close(fig)


def _ingredients(n_images: int):
    return pd.DataFrame(dict(model="m", e=1, n_iter=100, variant=["reference", "+Adam", "APGD (all three)"],
                             chosen=[False, False, True], n_images=n_images, n_seeds=1, tune_images=n_images,
                             gain=[None, 0.1, 0.3], gain_low=[None, -0.1, 0.1], gain_high=[None, 0.3, 0.5],
                             more_fooled=[None, 1, 3], less_fooled=[None, 0, 0], verdict=[None, "inconclusive", "holds"]))


@pytest.mark.parametrize("n_images, rows", [(1, None), (10, 2)])
def test_ingredients_forest_is_not_drawn_on_one_image(n_images, rows):
    fig = control_charts.ingredients_figure(_ingredients(n_images))
    if rows is None:
        assert fig is None
        return
    assert fig.forest_rows == rows and "APGD (all three) (chosen)" in _labels(fig)
    plt.close(fig)


def test_frame_sides_compares_opposite_sides():
    mass = pd.DataFrame(dict(model="m", cell_kind="all", n_images=10,
                             measure=["left", "right", "top", "bottom", "left - right", "top - bottom"],
                             value=[0.4, 0.8, 0.5, 0.6, -0.4, -0.1], low=[0.3, 0.7, 0.4, 0.5, -0.5, -0.2],
                             high=[0.5, 0.9, 0.6, 0.7, -0.3, 0.05]))
    fig = control_charts.frame_sides_figure(mass, None)
    assert _labels(fig) == ["m: left minus right", "m: top minus bottom"]
    assert _notes(fig)[0] == "left 0.40, right 0.80; n = 10"
    plt.close(fig)

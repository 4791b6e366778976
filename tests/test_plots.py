"""Plot helpers: what they draw, not how it looks."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ama.figures import plots  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_overlay_draws_the_image_then_the_map_in_unit_range(images32):
    fig, ax = plt.subplots()
    sal = torch.linspace(0, 1, 32 * 32).reshape(32, 32)
    plots.overlay(ax, images32[0], sal, title="t")
    base, top = ax.get_images()
    np.testing.assert_allclose(base.get_array(), images32[0].permute(1, 2, 0).numpy(), atol=1e-6)
    assert top.get_clim() == (0, 1) and top.get_alpha() == 0.5 and ax.get_title() == "t"


def test_show_map_draws_one_cell_per_cam_entry():
    fig, ax = plt.subplots()
    plots.show_map(ax, torch.rand(3, 5))
    (im,) = ax.get_images()
    assert im.get_array().shape == (3, 5)
    assert len(ax.xaxis.get_minorticklocs()) == 6 and len(ax.yaxis.get_minorticklocs()) == 4  # cell borders


def test_log_width_axis_labels_each_width_once():
    fig, ax = plt.subplots()
    ax.plot([1, 2, 4, 8], [0, 1, 2, 3])
    plots.log_width_axis(ax, [1, 2, 4, 8], "e")
    fig.canvas.draw()
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "e"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8"]
    assert len(ax.xaxis.get_minorticklocs()) == 0  # no '3 x 10^0'-style minor labels


def test_class_title_names_the_predicted_class_and_its_probability(tiny_model):
    logits = torch.tensor([0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    p = torch.softmax(logits, 0)
    assert plots.class_title(tiny_model, logits) == f"class1 ({100 * p[1]:.1f}%)"
    assert plots.class_title(tiny_model, logits, index=3, prefix="x: ") == f"x: class3 ({100 * p[3]:.1f}%)"


def test_attack_figures_show_the_8bit_result_and_name_the_optimizer(tiny_model, images32):
    import ama
    from ama.inputs import targets as shapes

    r = ama.marginal_attack(tiny_model, images32, e=2, n_iter=3, optimizer="apgd", names=list("abcd"))
    fig = plots.attack_figure(r, 1)
    assert len(fig.axes) == 4 and "(apgd)" in fig._suptitle.get_text() and fig._suptitle.get_text().startswith("b:")
    np.testing.assert_allclose(fig.axes[2].get_images()[0].get_array(), r.adv_q[1].permute(1, 2, 0).numpy(), atol=1e-6)
    fig = plots.examples_figure({2: r, 3: ama.marginal_attack(tiny_model, images32, e=3, n_iter=3)}, 0)
    assert len(fig.axes) == 6 + 1 and fig.axes[-1].get_ylabel() == "CAM (min-max normalised)"  # and a colourbar
    t = ama.marginal_attack(tiny_model, images32, e=2, n_iter=3, target_map=shapes.disc((8, 8)))
    fig = plots.target_figure(t, 0)
    assert len(fig.axes) == 4 and "targeted AMA" in fig._suptitle.get_text()


def test_attack_rows_figure_shows_the_new_class_cam_a_zoom_and_a_colourbar(tiny_model, images32):
    import ama

    r = ama.marginal_attack(tiny_model, images32, e=1, n_iter=3, names=list("abcd"))
    fig = plots.attack_rows_figure(r, [0, 2], zoom=8)
    assert len(fig.axes) == 2 * 6 + 1  # six panels per image and one colourbar
    assert fig.axes[-1].get_ylabel() == "CAM (min-max normalised)"
    zoom = fig.axes[3].get_images()[0].get_array()
    np.testing.assert_allclose(zoom, r.adv_q[0][:, :8, :8].permute(1, 2, 0).numpy(), atol=1e-6)
    for row, i in enumerate((0, 2)):
        new = fig.axes[6 * row + 5].get_title()
        changed = int(r.adv_q_class[i]) != int(r.clean_class[i])
        assert ("new class" in new) == changed and fig.axes[6 * row + 2].get_title().startswith(
            "FOOLED" if changed else "not fooled")
        # the last panel shows the CAM of the class the attacked image is now given
        cam = fig.axes[6 * row + 5].get_images()[1].get_array()
        from ama.kernels.upsampling import upsample
        np.testing.assert_allclose(cam, upsample(r.adv_q_cam_pred[i], (32, 32), "bilinear").numpy(), atol=1e-6)


def test_attack_rows_figure_says_when_its_last_two_maps_are_one(tiny_model, images32):
    """Not fooled (mode keep holds the class): the class's CAM is the clean class's, and the title says so."""
    import ama

    r = ama.marginal_attack(tiny_model, images32, e=1, n_iter=3, mode="keep", names=list("abcd"))
    assert bool((r.adv_q_class == r.clean_class).all())
    fig = plots.attack_rows_figure(r, [0], zoom=8)
    assert fig.axes[5].get_title() == "not fooled: the class is kept,\nso this is the map on the left again"
    np.testing.assert_array_equal(fig.axes[4].get_images()[1].get_array(), fig.axes[5].get_images()[1].get_array())


def test_per_image_lines_draw_bars_for_one_width_and_a_band_for_several():
    import pandas as pd
    from matplotlib.collections import LineCollection, PolyCollection

    from ama.figures import charts as figures

    def drawn(widths):
        long = pd.DataFrame([dict(model="m", image=i, e=e, metric="fooled", value=float((i + e) % 2), run="sign")
                             for i in range(6) for e in widths])
        g = figures._per_image_lines(long, "run", widths, None)
        kinds = {k for c in g.axes.flat[0].collections for k in type(c).__mro__}
        return kinds, g.axes.flat[0].get_ylabel()

    kinds, label = drawn([1])
    assert LineCollection in kinds and PolyCollection not in kinds and label.startswith("mean (bars:")
    kinds, label = drawn([1, 2])
    assert PolyCollection in kinds and label.startswith("mean (shaded:")


def test_misalignment_baselines_legend_sits_beside_the_bars():
    import pandas as pd

    from ama.figures import control_charts as control_figures

    verdicts = pd.DataFrame(dict(model="m", upsampling=["bilinear", "nearest"], erf_mass_outside_irf=[0.8, 0.9],
                                 low=[0.7, 0.85], high=[0.85, 0.95], uniform_mass_outside_irf=[0.9, 0.95],
                                 centred_gaussian_mass_outside_irf=[0.7, 0.9]))
    fig = control_figures.misalignment_baselines_figure(verdicts, 0.5)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend, frame = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend.x0 >= frame.x1  # right of the axes: it covers no bar


def test_example_images_include_failures():
    import pandas as pd

    from ama.studies.attack_examples import example_images

    def table(fooled):
        return pd.DataFrame(dict(model="m", setting="attack", mode="flip", e=1, n_iter=5, quantized=True,
                                 image=[f"i{k}" for k in range(len(fooled))], fooled=fooled))

    names = [f"i{k}" for k in range(5)]
    assert example_images(table([1, 0, 1, 1, 0]), "m", names, 1, 5, k=4) == [0, 2, 1, 4]
    assert example_images(table([0, 0, 1, 0, 0]), "m", names, 1, 5, k=4) == [2, 0, 1, 3]
    assert example_images(table([1, 1, 1, 1, 1]), "m", names, 1, 5, k=4) == [0, 1, 2, 3]
    assert example_images(table([1, 0, 1, 1, 0]), "m", names, 1, 5, k=1) == [0]


def test_misalignment_figure_draws_claim_1s_gap_to_the_aligned_null():
    import numpy as np
    import pandas as pd

    from ama.figures import charts as figures

    rng = np.random.default_rng(0)
    rows = [dict(model="m", image=f"i{k}", cell_kind=kind, cell=c, erf_mass_outside_irf=0.8 + 0.01 * rng.standard_normal(),
                 centred_gaussian_mass_outside_irf=0.7, margin_mass_ratio=1.0)
            for k in range(6) for kind in ("corner", "centre") for c in range(2)]
    fig = figures.misalignment_figure(pd.DataFrame(rows), ("erf_mass_outside_irf", "margin_mass_ratio"), 1)
    assert len(fig.axes) == 2  # the margin's ratio (claim 3's) has no aligned null: not drawn
    gap = fig.axes[1]
    assert "minus aligned null" in gap.get_ylabel() and fig.axes[0].get_ylabel()
    centres = [float(y) for line in gap.get_lines() for y in line.get_ydata() if len(line.get_ydata()) == 2]
    assert gap.get_legend() is None and any(t.get_text().startswith("0:") for t in gap.texts)
    heights = [y for line in gap.get_lines() if line.get_marker() == "o" for y in line.get_ydata()]
    assert heights == pytest.approx([0.1, 0.1], abs=0.02) and 0.0 in centres  # the gap, and the 0 line

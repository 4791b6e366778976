"""The explorer (`ama.apps.explorer`, notebooks/00_explore.ipynb): its methods headless on a tiny model, its widgets,
and the notebook run headless with its default values."""
from __future__ import annotations

import io
import re

import nbformat
import numpy as np
import pytest
import torch
from PIL import Image

import ama
from ama.apps.explorer import Explorer, cell_colours, text_colour
from ama.kernels import receptive_field as rf
from ama.paths import ROOT
from conftest import make_tiny_model


@pytest.fixture
def explorer(tiny_model):
    """An explorer on the tiny model (32 x 32 images, 8 x 8 CAM) and the first staged sample."""
    return Explorer(tiny_model, "chelsea", e=2, n_iter=3)


def test_select_image_gives_the_cam_and_class_of_the_model(explorer, tiny_model):
    x = ama.sample_images(tiny_model, ["chelsea"]).images
    assert explorer.x.shape == (1, 3, 32, 32) and explorer.grid == (8, 8)
    torch.testing.assert_close(explorer.cam, ama.cam(tiny_model, x)[0])
    logits = tiny_model(x)[0]
    assert explorer.class_name.startswith(f"class{int(logits.argmax())} (")
    assert explorer.figures["cam"].axes and explorer.cell is None and explorer.result is None


def test_select_image_accepts_an_upload_and_reports_a_bad_one(explorer, tiny_model):
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 50, 3), (200, 30, 30), np.uint8)).save(buf, format="PNG")
    explorer.select_cell(0)
    explorer.select_image(buf.getvalue(), name="red.png")
    assert explorer.image_name == "red" and explorer.cell is None and "receptive_field" not in explorer.figures
    assert torch.allclose(explorer.x[0, 0], torch.tensor(200 / 255), atol=0.02)  # the red image, resized
    with pytest.raises(ama.ImageLoadError, match="not an image file"):
        explorer.select_image(b"not an image", name="fake.jpg")


def test_select_cell_gives_its_irf_and_erf(explorer, tiny_model):
    explorer.select_cell(9)  # (1, 1)
    irf = rf.implicit_receptive_field((8, 8), (32, 32))[9]
    erf = rf.effective_receptive_field(tiny_model, explorer.x, cells=[9])[0, 0]
    torch.testing.assert_close(explorer.irf, irf)
    torch.testing.assert_close(explorer.erf, erf)
    assert explorer.erf.sum().item() == pytest.approx(1.0, abs=1e-5)
    outside = explorer.erf[~rf.irf_support(irf)].sum().item()
    assert explorer.erf_mass_outside_irf == pytest.approx(outside, abs=1e-6)
    assert len(explorer.figures["receptive_field"].axes) == 2
    assert "cell 9 = (1, 1)" in explorer.summary()


@pytest.mark.parametrize("k", [-1, 64, 2.0, True])
def test_select_cell_refuses_a_cell_outside_the_cam(explorer, k):
    with pytest.raises(ValueError, match=r"cell must be an integer in \[0, 63\] of the 8 x 8 CAM"):
        explorer.select_cell(k)


def test_run_attack_reports_progress_and_matches_marginal_attack(explorer, tiny_model):
    seen = []
    result = explorer.run_attack(e=2, n_iter=3, progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 3) and seen[-1] == (3, 3) and {d for d, _ in seen} == {0, 1, 2, 3}
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    ref = ama.marginal_attack(tiny_model, explorer.x, e=2, n_iter=3)
    torch.testing.assert_close(result.adv_q, ref.adv_q)
    assert (result.adv_q[0][:, 2:-2, 2:-2] == explorer.x[0, :, 2:-2, 2:-2].cpu()).all()  # only the frame changed
    names = [t.get_text() for t in (ax.title for ax in explorer.figures["attack"].axes)]
    assert names[0].startswith(f"clean: class{int(result.clean_class[0])} (")
    assert names[2].startswith(f"adversarial: class{int(result.adv_q_class[0])} (")
    assert "attack e = 2, 3 steps" in explorer.summary()


def test_run_attack_refuses_a_frame_wider_than_half_the_image(explorer):
    with pytest.raises(ValueError, match=r"e \(the frame width in pixels\) must be a positive integer below half"):
        explorer.run_attack(e=16, n_iter=1)


def test_select_model_by_name_reloads_the_image_at_its_size(explorer):
    explorer.select_model(make_tiny_model(seed=1, size=32))  # same name "tiny": replaced
    assert explorer.model_name == "tiny" and explorer.grid == (8, 8)
    with pytest.raises(ama.ModelError, match="unknown model"):
        explorer.select_model("no-such-model")


def test_show_gives_a_png_of_a_figure_once_it_exists(explorer):
    assert explorer.show("cam").data[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no 'attack' figure yet"):
        explorer.show("attack")


def test_cell_colours_follow_the_colormap():
    colours = cell_colours(torch.tensor([[0.0, 1.0]]))
    assert colours == ["#000080", "#800000"]  # jet's ends: dark blue, dark red


def test_cell_text_is_light_on_dark_cells_and_dark_on_light_ones():
    dark_blue, cyan, yellow, dark_red, mid_blue = cell_colours(torch.tensor([[0.0, 0.35, 0.65, 1.0, 0.2]]))
    assert [text_colour(c) for c in (dark_blue, cyan, yellow, dark_red, mid_blue)] == \
        ["white", "black", "black", "white", "white"]


def test_widget_buttons_select_cells_and_run_the_attack(explorer):
    ipywidgets = pytest.importorskip("ipywidgets")
    box = explorer.widget
    assert isinstance(box, ipywidgets.VBox)
    ui = explorer._ui
    buttons = ui.cells.children
    assert len(buttons) == 64 and buttons[5].description == f"{explorer.cam.flatten()[5].item():.2f}"
    assert buttons[63].style.button_color == cell_colours(explorer.cam)[63]
    buttons[5].click()
    assert explorer.cell == 5 and ui.views["receptive_field"].value[:4] == b"\x89PNG"
    ui.e.value, ui.n_iter.value = 1, 2
    ui.attack.click()
    assert explorer.result.params.e == 1 and explorer.result.params.n_iter == 2
    assert ui.progress.value == ui.progress.max == 2 and bytes(ui.views["attack"].value[:4]) == b"\x89PNG"
    assert "attack e = 1, 2 steps" in ui.status.value
    assert buttons[5].style.font_weight == "bold" and ui.cells.children[0] is buttons[0]
    assert buttons[5].layout.border == "3px solid white" and buttons[4].layout.border == "none"  # the chosen cell
    for b in buttons:  # each number readable on its own cell's colour
        assert b.style.text_color == text_colour(b.style.button_color)
    outlined = [p for ax in explorer.figures["cam"].axes for p in ax.patches]
    assert len(outlined) == 1  # the chosen cell outlined on the CAM too
    ui.image.value = "coffee"  # a dropdown choice calls select_image
    assert ui.cells.children[5].description == f"{explorer.cam.flatten()[5].item():.2f}"
    assert explorer.image_name == "coffee" and explorer.result is None and ui.views["attack"].layout.display == "none"
    ui._call(explorer.select_cell, 99)  # a bad click shows the one-line error instead of raising
    assert "ValueError: cell must be an integer" in ui.status.value


def test_explore_notebook_committed_clean_with_tagged_parameters():
    nb = nbformat.read(ROOT / "notebooks" / "00_explore.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert nb.metadata["kernelspec"]["name"] == "ama"


@pytest.mark.slow
def test_explore_notebook_runs_headless_with_its_defaults(tmp_path, lite0):
    """papermill with the `ama` kernel in notebooks/: the widget is built, the default cell and attack run, and the
    output names the classes that lite0 predicts on the clean and adversarial chelsea photo."""
    import papermill as pm

    out = tmp_path / "00_explore.ipynb"
    pm.execute_notebook(ROOT / "notebooks" / "00_explore.ipynb", out, kernel_name="ama", cwd=ROOT / "notebooks",
                        progress_bar=False, execution_timeout=300)
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    text = "".join(o.get("text", "") for o in outputs)
    x = ama.sample_images(lite0, ["chelsea"]).images
    clean = ama.figures.plots.class_title(lite0, lite0(x)[0])
    assert f"model lite0, image chelsea (224 x 224), CAM 7 x 7: {clean}" in text
    k = int(ama.cam(lite0, x)[0].argmax())
    assert f"cell {k} = ({k // 7}, {k % 7}): ERF mass outside the IRF support" in text
    attack = re.search(r"attack e = 2, 10 steps: (.+) -> (.+) \(\d+\.\d%\) \((fooled|not fooled), 8-bit frame\)", text)
    assert attack and attack[1] == clean and attack[2] in lite0.class_names
    assert (attack[3] == "fooled") == (attack[2] != clean.rsplit(" (", 1)[0])
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the attack figure

"""The studies' report sections (transfer, faithfulness) are written from the run's tables."""
from __future__ import annotations

import pandas as pd

from ama.report import markdown as report
from ama.studies import faithfulness, transfer


def _tables(run, erf_adv_mass: float):
    t = run / "tables"
    t.mkdir(parents=True)
    pd.DataFrame(dict(image=["a", "b"] * 4, model="m", e=1, optimizer=["sign"] * 4 + ["apgd"] * 4,
                      method=(["layercam"] * 2 + ["eigencam"] * 2) * 2,
                      fooled=True, cam_cosine=[0.2, 0.4, 0.9, 0.9, 0.1, 0.1, 0.7, 0.7], cam_spearman=0.5,
                      top20_iou=0.3, random_cam_cosine=0.8, random_cam_spearman=0.7, random_top20_iou=0.6)
                 ).to_csv(t / "transfer.csv", index=False)
    pd.DataFrame(dict(model="m", method=["gradcam"], n_images=2, max_abs_diff=[3e-7], min_cosine=1.0)
                 ).to_csv(t / "transfer_scale_check.csv", index=False)
    pd.DataFrame(dict(image=["a", "a"], model="m", method="cam", upsampling=["bilinear", "erf"],
                      deletion_auc=[0.30, 0.20], insertion_auc=[0.50, 0.70])).to_csv(t / "faithfulness.csv", index=False)
    one = pd.DataFrame(dict(image=["a", "a"], model="m", upsampling=["bilinear", "erf"], deletion_auc=[0.3, 0.2],
                            insertion_auc=[0.5, 0.7], occlusion_spearman=[0.4, 0.6], e=1, frame_share=0.02,
                            clean_frame_mass=0.01, adv_frame_mass=[0.02, erf_adv_mass], clean_band_mass=[0.10, 0.10],
                            adv_band_mass=[0.12, 0.10]))
    # two images with the same numbers: a verdict needs at least two (one image gives no interval)
    pd.concat([one, one.assign(image="b")], ignore_index=True).to_csv(t / "upsampling_comparison.csv", index=False)


def test_section_states_each_finding_from_the_numbers(tmp_path):
    _tables(tmp_path, erf_adv_mass=0.004)
    text = "\n".join(transfer.transfer_lines(tmp_path) + faithfulness.faithfulness_lines(tmp_path))
    # per method: the random frame's cosine minus the attack's, per image, with its interval and verdict
    assert ("with the sign optimiser at e = 1, the random frame's clean-vs-attacked cosine minus the attack's (> 0: the "
            "attack moves the map more) is eigencam -0.100 (95% CI -0.100 to -0.100): does not hold; layercam (a CAM "
            "relative) +0.500 (95% CI +0.400 to +0.600): holds") in text
    assert "with the apgd optimiser at e = 1" in text and "layercam (a CAM relative) +0.700" in text
    assert "3.0e-07" in text
    assert "lowest deletion AUC is cam / erf (0.200)" in text
    # the frame's share of the map's mass over its share of the image, clean -> attacked
    assert ("bilinear 0.50 -> 1.00 (change +0.50, 95% CI +0.50 to +0.50: holds); erf 0.50 -> 0.20 (change -0.30, "
            "95% CI -0.30 to -0.30: does not hold)") in text
    _tables(tmp_path / "other", erf_adv_mass=0.03)
    assert "erf 0.50 -> 1.50 (change +1.00" in "\n".join(faithfulness.faithfulness_lines(tmp_path / "other"))


def test_studies_without_tables_are_named_as_not_run(tmp_path):
    (tmp_path / "tables").mkdir()
    assert transfer.transfer_lines(tmp_path) == [] and faithfulness.faithfulness_lines(tmp_path) == []
    text = report.write_report(tmp_path).read_text()
    i = text.index("## Studies not run")
    assert "`location`, `transfer`, `faithfulness`, `defence`" in text[i:], text[i:i + 300]


def test_write_report_includes_the_section(tmp_path):
    _tables(tmp_path, erf_adv_mass=0.004)
    text = report.write_report(tmp_path).read_text()
    beyond = text.index("## Does the attack transfer to other explanations?")
    assert text.index("## Criteria") < text.index("## Claim 3:") < beyond < text.index(
        "## Faithfulness and ERF-aware upsampling") < text.index("## Appendix: the run")  # criteria first, the run last
    assert "lowest deletion AUC is cam / erf (0.200)" in text[beyond:] and "erf 0.50 -> 0.20" in text[beyond:]
    assert "Claim 1: The implicit and the effective receptive field" in text and "`location`" in text

"""The studies' report findings (transfer, faithfulness) are written from the run's tables."""
from __future__ import annotations

import pandas as pd

from ama.report import markdown as report
from ama.studies import faithfulness, transfer


def _tables(run, erf_adv_mass: float):
    t = run / "tables"
    t.mkdir(parents=True)
    pd.DataFrame(dict(image=["a", "b", "c"] * 4, model="m", e=1, optimizer=["sign"] * 6 + ["apgd"] * 6,
                      method=(["layercam"] * 3 + ["eigencam"] * 3) * 2,
                      fooled=True, cam_cosine=[0.2, 0.4, 0.3, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.7, 0.7, 0.7],
                      cam_spearman=0.5,
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


def test_findings_state_each_result_from_the_numbers(tmp_path):
    _tables(tmp_path, erf_adv_mass=0.004)
    found = transfer.transfer_finding(tmp_path)
    # per method: the random frame's cosine minus the attack's, per image, with its interval and verdict
    rows = found.table.set_index(["explanation", "optimiser"])
    assert rows.loc[("LayerCAM", "sign"), "random minus attack (95% CI)"] == "+0.50 (+0.25 to +0.75)"  # t, 3 images
    assert rows.loc[("EigenCAM", "sign"), "random minus attack (95% CI)"] == "-0.10 (-0.10 to -0.10)"
    assert "moves 1 of 2 other explanations" in found.sentence and "up to scale (checked)" in found.sentence
    assert "nan" not in found.table.to_string()
    faith = faithfulness.faithfulness_finding(tmp_path)
    rows = faith.table.set_index("upsampling")
    # the frame's share of the map's mass over its share of the image, clean -> attacked, and the change
    assert rows.loc["bilinear (CAM's)", "frame mass / area: clean"] == "0.50"
    assert rows.loc["bilinear (CAM's)", "attacked"] == "1.00"
    assert rows.loc["ERF projection", "change (95% CI)"] == "-0.30 (-0.30 to -0.30)"
    assert "Deletion AUC (lower is better): bilinear (CAM's) 0.30, ERF projection 0.20" in faith.sentence
    _tables(tmp_path / "other", erf_adv_mass=0.03)
    other = faithfulness.faithfulness_finding(tmp_path / "other").table.set_index("upsampling")
    assert other.loc["ERF projection", "attacked"] == "1.50"


def test_studies_without_tables_are_named_as_not_run(tmp_path):
    (tmp_path / "tables").mkdir()
    assert transfer.transfer_finding(tmp_path) is None and faithfulness.faithfulness_finding(tmp_path) is None
    text = report.write_report(tmp_path).read_text()
    i = text.index("## Studies not run")
    assert "`location`, `transfer`, `faithfulness`, `defence`" in text[i:], text[i:i + 300]


def test_write_report_includes_the_section(tmp_path):
    _tables(tmp_path, erf_adv_mass=0.004)
    text = report.write_report(tmp_path).read_text()
    beyond = text.index("## Does the attack transfer to other explanations?")
    assert (text.index("## The claims") < text.index("## Does the paper reproduce?") < text.index("## Criteria")
            < text.index("## Claim 3:") < beyond < text.index("## Faithfulness and ERF-aware upsampling")
            < text.index("## Appendix: the run"))  # the answers first, the criteria before the results, the run last
    assert "| LayerCAM " in text[beyond:] and "nan" not in text
    assert "Claim 1: The implicit and the effective receptive field" in text and "`location`" in text

"""Intervals, three-valued verdicts, and the paper's protocol on labelled images (ama.stats.intervals, ama.inputs.protocol)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ama import paths
from ama.inputs import protocol
from ama.inputs.images import ImageRecord
from ama.stats import intervals


@pytest.mark.parametrize("k, n, low, high", [(6, 9, 0.35, 0.88), (3, 9, 0.12, 0.65), (4, 9, 0.19, 0.73),
                                             (13, 27, 0.31, 0.66), (0, 10, 0.0, 0.28), (10, 10, 0.72, 1.0)])
def test_wilson_intervals_of_the_reports_rates(k, n, low, high):
    """The issue's numbers: every 9-photo rate's interval contains the 50% bar."""
    lo, hi = intervals.wilson(k, n)
    assert (round(lo, 2), round(hi, 2)) == (low, high)


def test_the_exact_interval_of_a_rate():
    """Clopper-Pearson: the issue's 114 of 200 (49.8% to 64.0%, where Wilson gives 50.1% to 63.7%) and the closed
    form for none of n, upper end 1 - 0.025 ** (1 / n)."""
    lo, hi = intervals.clopper_pearson(114, 200)
    assert (round(lo, 3), round(hi, 3)) == (0.498, 0.640)
    assert tuple(round(v, 3) for v in intervals.wilson(114, 200)) == (0.501, 0.637)
    assert intervals.clopper_pearson(0, 10) == pytest.approx((0.0, 1 - 0.025 ** 0.1))
    rate = intervals.Estimate.rate(114, 200)
    assert rate.verdict(0.5) == "inconclusive" and rate.wilson[0] > 0.5  # Wilson alone would say "holds"
    assert all(np.isnan(intervals.clopper_pearson(0, 0)))


@pytest.mark.parametrize("more, less, p", [(0, 5, 0.0625), (4, 0, 0.125), (10, 0, 2 * 0.5 ** 10), (3, 3, 1.0),
                                           (0, 0, 1.0)])
def test_the_exact_sign_test_of_paired_outcomes(more, less, p):
    """McNemar's exact test on the discordant images: the issue's 0 vs 5 (p = 0.0625) and 4 vs 0 (p = 0.125)."""
    assert intervals.sign_test(more, less) == pytest.approx(p)


def test_a_paired_difference_is_judged_by_its_exact_test():
    frame, ring = [0] * 30, [1] * 5 + [0] * 25
    gap = intervals.Estimate.paired(frame, ring)
    assert gap.value == pytest.approx(-5 / 30) and gap.discordant == (0, 5) and gap.p_value == pytest.approx(0.0625)
    assert gap.verdict(0.0) == "inconclusive"  # 0 vs 5 images cannot decide it at the 5% level
    assert "0 vs 5 images differ, exact sign test p = 0.0625" in gap.text(percent=True)
    assert gap.against(0.0).endswith("(0 vs 5 differ) gives p = 0.0625: inconclusive")
    strong = intervals.Estimate.paired([1] * 10 + [0] * 20, [0] * 30)
    assert strong.verdict(0.0) == "holds" and strong.verdict(0.0, above=False) == "does not hold"
    assert strong.low > 0  # the exact interval agrees, by construction
    seeds = intervals.Estimate.paired([1, 2 / 3, 1 / 3, 1], [0, 2 / 3, 0, 0.5])  # means over seeds: the paired t-test
    assert seeds.discordant == (3, 0) and seeds.n == 4 and seeds.test == "paired t-test"
    assert seeds.p_value == pytest.approx(stats.ttest_1samp([1, 0, 1 / 3, 0.5], 0).pvalue)
    assert seeds.interval == pytest.approx(tuple(stats.ttest_1samp([1, 0, 1 / 3, 0.5], 0).confidence_interval()))
    with pytest.raises(ValueError, match="against 0"):
        gap.verdict(0.1)


def test_the_exact_paired_interval_covers_the_paired_difference():
    """The exact interval of McNemar's test for paired rates: its coverage of the true difference over simulated
    paired yes/no outcomes (40 images; correlated) is at least about 95% (it is exact, so conservative)."""
    rng = np.random.default_rng(0)
    covered = []
    for _ in range(1000):
        z = rng.random(40)
        x, y = z < 0.5, (z < 0.35) | (rng.random(40) < 0.1)
        lo, hi = intervals.paired_rate_interval(x, y)
        covered.append(lo <= 0.5 - (0.35 + 0.65 * 0.1) <= hi)
    assert 0.93 <= np.mean(covered) <= 0.995
    assert intervals.paired_rate_interval([1, 1, 0, 0], [1, 1, 0, 0]) == pytest.approx((0.0, 0.0))  # none differ
    # 10 of 30 differ, all one way: pi's exact lower end 0.025 ** (1 / 10) = 0.692, the difference's (10 / 30)(0.385)
    assert intervals.paired_rate_interval([1] * 10 + [0] * 20, [0] * 30) == pytest.approx((0.1282, 1 / 3), abs=1e-3)


def _agree(est, threshold) -> bool:
    return intervals.verdict(est.interval, threshold) == est.verdict(threshold)


def test_every_interval_gives_its_tests_verdict():
    """Issue 42, item 6: the interval inverts the test that decides, for every kind of estimate, on random data with
    ties (rates, paired yes/no, paired means over seeds, medians and means over images, small and large n)."""
    rng = np.random.default_rng(3)
    for trial in range(1200):
        n = int(rng.integers(2, 60))
        a, b = rng.integers(0, 2, n), (rng.random(n) < rng.random()).astype(int)
        v = np.round(rng.normal(rng.normal(0, 0.5), 1, n), 1)
        t = float(np.round(rng.normal(0, 0.3), 1))
        assert _agree(intervals.Estimate.rate(int(a.sum()), n), float(rng.uniform(0.05, 0.95)))
        assert _agree(intervals.Estimate.paired(a, b), 0.0)
        assert _agree(intervals.Estimate.paired(rng.integers(0, 3, n) / 2, rng.integers(0, 3, n) / 2), 0.0)
        assert _agree(intervals.Estimate.of(v, np.median), t)
        assert _agree(intervals.Estimate.of(v, np.mean), t)


def test_wilson_refuses_impossible_rates():
    assert all(np.isnan(intervals.wilson(0, 0)))
    with pytest.raises(ValueError, match="0 <= k <= n"):
        intervals.wilson(5, 4)


def test_bootstrap_is_seeded_and_resamples_the_values():
    v = np.random.default_rng(0).random(30)
    a, b = intervals.bootstrap(v, seed=3), intervals.bootstrap(v, seed=3)
    assert a == b and a != intervals.bootstrap(v, seed=4)
    assert v.min() <= a[0] < np.mean(v) < a[1] <= v.max()
    se = v.std(ddof=1) / np.sqrt(len(v))  # the interval of a mean is close to +- 1.96 standard errors
    assert a[1] - a[0] == pytest.approx(2 * 1.96 * se, rel=0.15)
    v = [0.1, 0.5, 0.9, 0.3, 0.7]
    assert intervals.bootstrap([0.4]) == (0.4, 0.4) and intervals.bootstrap([2.0, 2.0]) == (2.0, 2.0)
    assert all(np.isnan(intervals.bootstrap([np.nan])))
    lo, hi = intervals.bootstrap(v, np.median, seed=0)
    assert lo in v and hi in v  # a median of resamples of 5 values is one of them


def test_bootstrap_is_bca():
    """The bias-corrected and accelerated interval (scipy's BCa with the same seed), which a skewed sample moves
    towards its long tail compared with the percentile interval."""
    from scipy.stats import bootstrap

    v = np.random.default_rng(2).exponential(size=40)
    got = intervals.bootstrap(v, seed=5)
    kw = dict(n_resamples=intervals.N_RESAMPLES, vectorized=True)
    bca = bootstrap((v,), np.mean, method="BCa", random_state=np.random.default_rng(5), **kw).confidence_interval
    pct = bootstrap((v,), np.mean, method="percentile", random_state=np.random.default_rng(5), **kw).confidence_interval
    assert got == pytest.approx((bca.low, bca.high)) and got[1] > pct.high


def test_bootstrap_gives_a_vectorisable_statistic_all_resamples_at_once_with_the_same_interval():
    v = np.random.default_rng(1).normal(size=40)
    for statistic in (np.mean, np.median):
        one_by_one = intervals.bootstrap(v, lambda s: statistic(s))  # no axis: one call per resample
        assert intervals._takes_axis(statistic) and not intervals._takes_axis(lambda s: statistic(s))
        assert intervals.bootstrap(v, statistic) == one_by_one


@pytest.mark.parametrize("interval, above, expected", [
    ((0.6, 0.9), True, "holds"), ((0.1, 0.4), True, "does not hold"), ((0.4, 0.6), True, "inconclusive"),
    ((0.1, 0.4), False, "holds"), ((0.6, 0.9), False, "does not hold"), ((np.nan, np.nan), True, "inconclusive")])
def test_three_valued_verdict(interval, above, expected):
    assert intervals.verdict(interval, 0.5, above) == expected


def test_estimate_sentence_states_interval_threshold_and_verdict():
    est = intervals.Estimate.rate(6, 9)
    assert est.text(percent=True) == "67% (95% exact CI 30% to 93%, 9 images)"
    assert est.against(0.5, percent=True) == "its 95% interval (30% to 93%) contains the threshold of 50%: inconclusive"
    assert intervals.Estimate.rate(9, 9).against(0.5, percent=True).endswith("lies wholly above the threshold of "
                                                                             "50%: holds")
    one = intervals.Estimate.of([0.8])
    assert "rests on one image" in one.text() and one.verdict(0.5) == "inconclusive"  # no interval from one image
    assert one.against(0.5) == "it rests on 1 image(s), too few for an interval: inconclusive"
    assert intervals.Estimate.of([0.8, 0.9]).verdict(0.5) == "inconclusive"  # two images: the t-test cannot decide
    assert intervals.Estimate.of([0.8, 0.9, 0.85]).verdict(0.5) == "holds"


def test_per_image_summaries_before_pooling():
    cells = pd.DataFrame(dict(model="m", image=["a", "a", "a", "b"], value=[1.0, 1.0, 1.0, 0.0]))
    per = intervals.per_image(cells, "value")
    assert per.tolist() == [1.0, 0.0]  # image a's three cells count once


def test_stratified_choice_spreads_over_the_classes():
    names = [f"im{k}" for k in range(100)]
    labels = list(range(100))[::-1]  # the class order is not the name order
    chosen = protocol.stratified_choice(names, labels, 10, seed=0)
    assert len(chosen) == 10 and chosen == protocol.stratified_choice(names, labels, 10, seed=0)
    strata = sorted(labels[names.index(n)] // 10 for n in chosen)
    assert strata == list(range(10))  # one image from each tenth of the class order
    assert chosen != protocol.stratified_choice(names, labels, 10, seed=1)
    assert protocol.stratified_choice(names[:3], labels[:3], 10, seed=0) == names[:3]


def test_select_takes_only_images_every_model_classifies_correctly():
    records = [ImageRecord(None, f"im{k}", k) for k in range(6)]
    preds = pd.DataFrame(dict(model=["a"] * 6 + ["b"] * 6, image=[f"im{k}" for k in range(6)] * 2,
                              top1=[True, True, False, True, True, True, True, False, True, True, True, True]))
    chosen = protocol.select(records, preds, None, seed=0)
    assert [r.name for r in chosen] == ["im0", "im3", "im4", "im5"]  # im1 wrong for b, im2 wrong for a
    assert len(protocol.select(records, preds, 2, seed=0)) == 2


def test_predictions_and_accuracy_of_a_tiny_model(tiny_model, tmp_path):
    import torch
    from PIL import Image

    from ama.inputs.images import list_images

    rng = np.random.default_rng(0)
    for k in range(4):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype("uint8")).save(tmp_path / f"im{k}.png")
    records = [r._replace(label=k) for k, r in enumerate(list_images(tmp_path))]
    preds = protocol.predictions(tiny_model, records, batch_size=3)
    x = torch.stack([tiny_model.preprocess(Image.open(tmp_path / f"im{k}.png").convert("RGB")) for k in range(4)])
    with torch.no_grad():
        expected = tiny_model(x).argmax(1)
    assert preds.predicted.tolist() == expected.tolist()
    assert preds.top1.tolist() == (expected == torch.arange(4)).tolist()
    acc = protocol.accuracy(preds)
    assert acc.top1.iloc[0] == preds.top1.mean() and acc.n_images.iloc[0] == 4
    assert acc.top1_low.iloc[0] <= acc.top1.iloc[0] <= acc.top1_high.iloc[0]
    assert (preds.top5 >= preds.top1).all()


def test_clean_predictions_are_computed_once_per_model_and_image_set(tiny_model, tmp_path, monkeypatch):
    """A second run on the same images reads the first's predictions; another image set, or an edited image, computes
    again."""
    import os

    from PIL import Image

    from ama.inputs.images import list_images

    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    loaded = []
    monkeypatch.setattr(protocol, "run_model", lambda name, device: loaded.append(name) or tiny_model)
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype("uint8")).save(tmp_path / f"im{k}.png")
    records = [r._replace(label=k) for k, r in enumerate(list_images(tmp_path))]
    first = protocol.clean_predictions("tiny", "cpu", records)
    pd.testing.assert_frame_equal(protocol.clean_predictions("tiny", "cpu", records), first)
    assert loaded == ["tiny"] and (tmp_path / "cache" / ".lock.tiny").is_file()
    protocol.clean_predictions("tiny", "cpu", records[:2])
    assert loaded == ["tiny"] * 2
    os.utime(records[0].path, ns=(1, 1))  # the same name, another file
    protocol.clean_predictions("tiny", "cpu", records)
    assert loaded == ["tiny"] * 3


def test_evenly_keeps_the_subset_spread():
    names = [f"im{k}" for k in range(10)]
    assert protocol.evenly(names, 4) == ["im0", "im3", "im6", "im9"]
    assert protocol.evenly(names, 0) == names and protocol.evenly(names, 20) == names


def test_labels_decide_fooled_and_the_terciles_and_seeds_summarise(tiny_model, images32):
    """with_labels measures fooled against the true label; by_confidence cuts the images at their clean confidence's
    terciles with Wilson intervals; seed_spread summarises the seeds."""
    import torch

    from ama.stats.intervals import clopper_pearson
    from ama.studies import attack_experiments as ax
    from ama.studies import attack_summaries

    x = torch.cat([images32, images32.flip(-1), images32.flip(-2)])  # 12 images
    names = [f"im{k}" for k in range(12)]
    r = ax.marginal_attack(tiny_model, x, e=2, n_iter=3, names=names)
    rows = r.metrics.assign(setting="attack")
    labels = r.clean_class.clone()
    labels[0] = (labels[0] + 1) % 10  # one image whose label the model gets wrong
    got = ax.with_labels(rows, names, labels)
    assert list(got.columns).index("label") == list(got.columns).index("clean_class") - 1
    assert got.fooled.tolist() == (got.adv_class != got.label).tolist()
    assert bool(got[got.image == "im0"].fooled.iloc[0]) == bool(got[got.image == "im0"].adv_class.iloc[0] != labels[0])
    unlabelled = ax.with_labels(rows, names, torch.full((12,), -1))
    assert unlabelled.fooled.tolist() == rows.fooled.tolist()
    conf = attack_summaries.by_confidence(got)
    assert list(conf.tercile) == ["low", "middle", "high"] and (conf.n_images == 4).all()
    assert (conf.conf_max.iloc[:2].to_numpy() <= conf.conf_min.iloc[1:].to_numpy()).all()  # ordered, disjoint
    q = got[got.quantized]
    for row in conf.itertuples():
        k = int(q[q.clean_conf.between(row.conf_min, row.conf_max)].fooled.sum())
        assert row.fooled == k and (row.low, row.high) == clopper_pearson(k, 4)
    seeds = pd.concat([ax.marginal_attack(tiny_model, x[:4], e=2, n_iter=3, seed=s, names=names[:4]).metrics
                       for s in (0, 1, 2)], ignore_index=True)
    spread = attack_summaries.seed_spread(seeds)
    per_seed = seeds[seeds.quantized].groupby("seed").fooled.mean()
    assert spread.n_seeds.iloc[0] == 3 and spread.fooling_rate.iloc[0] == pytest.approx(per_seed.mean())
    assert (spread.fooling_min.iloc[0], spread.fooling_max.iloc[0]) == (per_seed.min(), per_seed.max())


def test_slim_grid_and_the_reference_seeds():
    from ama.params import RunParams
    from ama.studies import attack_experiments as ax

    slim = ax.grid_plan(RunParams(grid="slim", e=(1, 2)))
    assert slim.n_iters == (100,) and slim.modes == ("flip",)
    assert slim.jobs() == [(1, 100, "flip"), (2, 100, "flip")]
    paper = ax.grid_plan(RunParams())
    assert paper.n_iters == (50, 100) and paper.first("keep") == (1, 100)
    assert paper.jobs() == [(1, 50, "flip"), (1, 100, "flip"), (1, 100, "keep"), (2, 50, "flip"), (2, 100, "flip"),
                            (4, 100, "flip"), (8, 100, "flip")]  # 50 passes at e = 1, 2 only; keep at the smallest e
    assert ax.seed_plan(RunParams(n_seeds=3, e=(1, 2, 4))) == [("sign", 1, 0), ("sign", 1, 1), ("sign", 1, 2),
                                                               ("sign", 2, 0), ("sign", 2, 1), ("sign", 2, 2)]
    assert ax.seed_plan(RunParams()) == []
    assert ax.seed_plan(RunParams(n_seeds=2, e=(1, 2), grid="slim")) == [("sign", 1, 0), ("sign", 1, 1)]  # time
    from ama.studies.ablation import ablation_plan

    strongest = ablation_plan(RunParams(e=(1, 2)))
    assert strongest["optimizer_names"] == ["sign", "apgd"] and strongest["keep_e"] == [] and strongest["budgets"] == [100]
    assert ablation_plan(RunParams(ablation="full"))["optimizer_names"] == ["sign", "apgd", "adam"]


# top-1 correct of 50 fixed images (class indices 0, 20, ..., 980), measured with the kit's loaders on the CPU:
# the original JPEGs of EliSchwartz/imagenet-sample-images (not in the kit: sha256 in the manifest) and the kit's
# re-encoded copies (tools/imagenet_sample.py). README, "The images"; on all 1000 each model stays within 1 point.
SUBSET_TOP1 = {"lite0": (44, 45), "lite1": (41, 42), "lite2": (45, 43)}  # (originals, re-encoded)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SUBSET_TOP1))
def test_the_reencoded_subset_keeps_its_top1(name):
    from ama.inputs.images import list_images
    from ama.inputs.models import load_model

    records = list_images("data/imagenet")
    subset = [r for r in records if r.label % 20 == 0]
    assert len(records) == 1000 and len(subset) == 50
    preds = protocol.predictions(load_model(name, device="cpu"), subset)
    assert int(preds.top1.sum()) == SUBSET_TOP1[name][1]  # the committed files give what was measured


def test_an_unreadable_file_is_named_and_an_empty_set_refused_before_any_notebook(tmp_path, capsys):
    from PIL import Image

    from ama.inputs.images import ImageLoadError
    from ama.inputs.protocol import write_selection
    from ama.params import RunParams

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "x.jpg").write_text("not an image")
    params = RunParams(images=str(folder), n_images=None)
    with pytest.raises(ImageLoadError, match=r"none of the 1 image file\(s\) chosen could be read \(skipped: x\.jpg\)"):
        write_selection(params, tmp_path / "run")
    assert not (tmp_path / "run" / "selection.csv").exists()
    Image.new("RGB", (64, 64), (90, 120, 30)).save(folder / "good.png")
    table = write_selection(params, tmp_path / "run")
    assert list(table.image) == ["good"]
    assert "skipped x.jpg: " in capsys.readouterr().err


def test_ranks_started_together_choose_the_run_images_once(tmp_path):
    """Two torchrun ranks that reach a run folder without ``selection.csv`` must not both choose (they could choose
    differently, and their renames collided): the second waits on ``.lock.selection`` and reads the first's choice."""
    import subprocess
    import sys
    import time

    from PIL import Image

    from ama.params import RunParams
    from ama.paths import exclusive

    folder, run = tmp_path / "images", tmp_path / "run"
    folder.mkdir()
    for k in range(4):
        Image.new("RGB", (32, 32), (60 * k, 90, 30)).save(folder / f"im{k}.png")
    params = RunParams(images=str(folder), n_images=3)
    rank = ("import json, sys; from ama.params import RunParams; from ama.inputs.protocol import run_records\n"
            "params = RunParams.from_dict(json.loads(sys.argv[1])); print('started', flush=True)\n"
            "print(' '.join(r.name for r in run_records(params, sys.argv[2])), flush=True)")
    with exclusive(run / ".lock.selection"):  # the first rank, choosing
        other = subprocess.Popen([sys.executable, "-c", rank, params.to_json(), str(run)], stdout=subprocess.PIPE,
                                 text=True)
        assert other.stdout.readline() == "started\n"
        time.sleep(1.0)
        assert not (run / "selection.csv").exists()  # the second rank waits instead of choosing
        (run / "selection.csv").write_text("image,label\nim2,-1\n")
    out, _ = other.communicate(timeout=60)
    assert other.returncode == 0 and out.strip() == "im2"  # ... and reads the choice it waited for

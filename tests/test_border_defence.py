"""The border defence: what it does to the pixels, that the frame no longer matters, what it restores and costs."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_model

from ama.attack.marginal import marginal_attack
from ama.geometry import frame_mask
from ama.studies import border_defence as bd


def test_replicate_copies_the_pixel_e_inside_and_crop_resize_rescales_the_inner_image(images32):
    x = images32[:1]
    d = bd.defend(x, 2, "replicate")
    assert torch.equal(d[..., 2:-2, 2:-2], x[..., 2:-2, 2:-2])            # the inner image is untouched
    assert torch.equal(d[..., 0, 5], x[..., 2, 5]) and torch.equal(d[..., 0, 0], x[..., 2, 2])  # rows, corners
    c = bd.defend(x, 1, "crop_resize")
    assert torch.equal(c, F.interpolate(x[..., 1:-1, 1:-1], size=(32, 32), mode="bilinear", align_corners=False))
    with pytest.raises(ValueError, match="unknown defence"):
        bd.defend(x, 1, "blur")
    with pytest.raises(ValueError, match="leave an inner image"):
        bd.defend(x, 16, "replicate")


@pytest.mark.parametrize("defence", bd.DEFENCES)
def test_the_defended_image_does_not_depend_on_the_frame_so_an_adaptive_attack_has_no_gradient(defence, images32):
    x = images32[:2]
    m = frame_mask((32, 32), 1)
    frame = torch.rand(2, 3, 32, 32, requires_grad=True)
    z = x * (~m) + frame * m
    assert torch.equal(bd.defend(z, 1, defence), bd.defend(x, 1, defence))
    bd.defend(z, 1, defence).sum().backward()
    assert frame.grad.abs().max() == 0


def test_defence_rows_on_a_real_attack_restore_every_image_whose_defended_clean_image_is_right(tiny_model, images32):
    r = marginal_attack(tiny_model, images32, e=1, n_iter=3, names=list("abcd"))
    rows = bd.defence_rows(tiny_model, r, None, "sign")
    assert len(rows) == 4 * len(bd.DEFENCES) and rows.same_as_clean.all()
    assert (rows.restored == rows.clean_kept).all()  # the same defended image: the same prediction
    assert rows.fooled.tolist()[:4] == (r.adv_q_class != r.clean_class).tolist()
    s = bd.defence_summary(rows)
    assert list(s.defence) == sorted(bd.DEFENCES) and (s.n_images == 4).all()
    found = bd.defence_finding(s, None)
    assert "equals the defended clean one in 100% of cases" in found.sentence
    assert len(found.table) == len(bd.DEFENCES) and "nan" not in found.table.to_string()


def test_clean_cost_counts_the_images_the_defence_loses(tiny_model, monkeypatch):
    from ama.inputs.images import LoadedImages

    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        labels = tiny_model(x).argmax(1)
    monkeypatch.setattr(bd, "load_records", lambda recs, model: LoadedImages(x[recs[0]:recs[-1] + 1], [str(i) for i in recs],
                                                                             labels[recs[0]:recs[-1] + 1], [], []))
    cost = bd.clean_cost(tiny_model, list(range(6)), [1, 2], batch_size=4)
    assert len(cost) == 4 and (cost.top1 == 1).all() and (cost.n_images == 6).all()
    with torch.no_grad():
        kept = (tiny_model(bd.defend(x, 2, "replicate")).argmax(1) == labels).float()
    row = cost[(cost.defence == "replicate") & (cost.e == 2)].iloc[0]
    assert row.defended_top1 == pytest.approx(kept.mean().item()) and row.lost == int((kept == 0).sum())
    assert row.gained == 0


def test_the_defence_is_counted_on_the_fooled_images_and_attacked_on_the_ring_it_copies():
    """Issue 42, item 8: ``restored`` is a share of the fooled images; the adaptive attack changes only the ring at
    depth e, which ``replicate`` copies outwards, and goes through the defence."""
    from ama.params import RunParams

    rows = pd.DataFrame(dict(model="m", e=1, optimizer="sign", defence="replicate", image=list("abcd"), label=0,
                             fooled=[True, True, False, False], restored=[True, False, True, True],
                             clean_kept=True, cam_cosine=0.9, defended_cam_cosine=0.95, same_as_clean=True))
    s = bd.defence_summary(rows).iloc[0]
    assert s.n_fooled == 2 and s.restored == 0.5 and s.clean_kept == 1.0  # not 3 of 4: the unfooled count for nothing
    ring = bd.ring_mask((32, 32), 2)
    assert ring.sum() == 4 * (32 - 2 * 2) - 4 and not ring[:2].any() and ring[2, 2:30].all()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(bd.defend(x, 2)[..., 0, 2:30], x[..., 2, 2:30])  # the ring is what it copies
    model = make_tiny_model()
    defended = bd.defended_model(model, 2)
    assert torch.equal(defended(x), model(bd.defend(x, 2)))
    adaptive = bd.adaptive_rows(model, x, ["a"], torch.tensor([-1]), RunParams(n_iter=3, e=(2,)),
                                            "sign", 2)
    assert adaptive.ring_pixels.iloc[0] == int(ring.sum()) and len(adaptive) == 1
    frame = rows.assign(image="a").iloc[:1]
    summary = bd.adaptive_summary(adaptive.assign(e=1), frame)
    assert summary.n_images.iloc[0] == 1 and {"ring_fooled", "frame_fooled", "ring_minus_frame"} <= set(summary)


def test_the_report_gives_the_adaptive_ring_attack_beside_the_frame_undefended():
    """The adaptive ring attack's sentence: the smallest e only, each optimiser's rate through the defence against the
    frame's undefended, McNemar's p; "does not stop it" only where the ring fools at least as often."""
    row = dict(model="lite0", n_images=20, ring_low=0.1, ring_high=0.4, ring_minus_frame=0.0, gap_low=0, gap_high=0,
               p_value=1.0, cam_cosine=0.8)
    adaptive = pd.DataFrame([dict(row, e=1, optimizer="sign", ring_pixels=884, ring_fooled=0.2, frame_fooled=0.2),
                             dict(row, e=2, optimizer="sign", ring_pixels=876, ring_fooled=0.9, frame_fooled=0.25)])
    text = bd.adaptive_sentence(adaptive)
    assert "(the pixels at depth e = 1)" in text and "e = 2" not in text and "90%" not in text
    assert "20% of the same 20 images are fooled (sign); the frame undefended fools 20%" in text
    assert "(McNemar, paired: p = 1)" in text and "does not stop it" in text
    assert "does not stop it" not in bd.adaptive_sentence(adaptive.assign(ring_fooled=0.1))

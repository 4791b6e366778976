"""Folder runs under torchrun (2 CPU processes) and interrupted or concurrent runs: each row exactly once."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import ama.apps.cli as cli
import ama.store.parts

TINY = "conftest:make_tiny_model"
TESTS = Path(__file__).parent
SCALING = TESTS.parent / "docs" / "SCALING.md"  # where the torchrun lines are documented
SETTINGS = ["--model_name", TINY, "--n_iter", "3", "--batch-size", "2", "--device", "cpu"]


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    for i in range(6):
        arr = (np.random.default_rng(i).random((40, 48, 3)) * 255).astype("uint8")
        Image.fromarray(arr).save(d / ("sub" if i % 3 == 0 else ".") / f"im{i}.png")
    Image.fromarray((np.random.default_rng(9).random((40, 48, 3)) * 255).astype("uint8")).save(d / "im1.jpg")
    (d / "broken.jpg").write_text("not an image")
    return d


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env["PYTHONPATH"] = f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    return env


def _readme_launch_line() -> list[str]:
    """The single-machine launch line docs/SCALING.md shows (one line, starting with ``.venv/bin/torchrun --standalone``)."""
    lines = [ln.strip() for ln in SCALING.read_text().splitlines()
             if ln.strip().startswith(".venv/bin/torchrun --standalone") and " -m ama attack " in ln]
    assert lines, "docs/SCALING.md shows no `.venv/bin/torchrun --standalone ... -m ama attack` line"
    return shlex.split(lines[0])


def _single(folder, out, e=("1", "2")):
    assert cli.main(["attack", "--images", str(folder), "--e", *e, "--out", str(out), *SETTINGS]) == 0
    return pd.read_csv(out / "attack_metrics.csv")


def test_readme_torchrun_line_gives_the_rows_of_one_process(folder, tmp_path):
    argv = _readme_launch_line()
    assert argv[:4] == [".venv/bin/torchrun", "--standalone", "--nproc_per_node=2", "-m"] and "--frame-width" in argv
    images, out = argv.index("--images") + 1, argv.index("--out") + 1
    argv[images], argv[out] = str(folder), str(tmp_path / "two")
    argv = [sys.executable, "-m", "torch.distributed.run", *argv[1:], *SETTINGS]  # the torchrun script, this venv
    proc = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    two = pd.read_csv(tmp_path / "two" / "attack_metrics.csv")
    widths = argv[argv.index("--frame-width") + 1:argv.index("--out")]
    one = _single(folder, tmp_path / "one", e=widths)
    assert sorted(os.listdir(tmp_path / "two" / "parts")) == ["attack_metrics.rank0.csv", "attack_metrics.rank1.csv",
                                                              "plan.rank0.json", "plan.rank1.json"]
    assert set(two.file) == {"im1.jpg", "im1.png", "im2.png", "im4.png", "im5.png", "sub/im0.png", "sub/im3.png"}
    pd.testing.assert_frame_equal(two, one, check_exact=False, atol=1e-5)  # same rows, keys and order


def test_torchrun_claims_the_short_e(folder, tmp_path):
    """Why docs/SCALING.md says --frame-width under torchrun: torchrun stops at --e itself."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ama",
            "attack", "--images", str(folder), "--e", "1", "--out", str(tmp_path)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode != 0 and "ambiguous option: --e could match" in proc.stderr


def _as_rank(monkeypatch, rank, world=2):
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(world))
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")


def test_rank_killed_mid_run_then_restarted(folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    args = ["attack", "--images", str(folder), "--frame-width", "1", "2", "--out", str(out), *SETTINGS]
    real = ama.store.parts.RankPart.append

    def killed(part, df):  # rank 1 dies while writing its second batch
        killed.calls += 1
        if killed.calls == 2:
            raise SystemExit(-9)
        real(part, df)

    killed.calls = 0
    _as_rank(monkeypatch, 1)
    monkeypatch.setattr(ama.store.parts.RankPart, "append", killed)
    with pytest.raises(SystemExit):
        cli.main(args)
    monkeypatch.setattr(ama.store.parts.RankPart, "append", real)
    _as_rank(monkeypatch, 0)
    assert cli.main(args) == 0  # rank 0 is not held up by the dead rank, and merges what there is
    assert "row(s) of other ranks still missing" in capsys.readouterr().out
    assert cli.main(["merge", str(out)]) == 2
    assert re.search(r"error: .*: \d+ expected row\(s\) missing, e.g. '", capsys.readouterr().err)
    for rank in (1, 0):  # the whole launch restarted
        _as_rank(monkeypatch, rank)
        assert cli.main(args) == 0
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var)
    assert cli.main(["merge", str(out)]) == 0
    table = pd.read_csv(out / "attack_metrics.csv")
    one = _single(folder, tmp_path / "one")
    pd.testing.assert_frame_equal(table, one, check_exact=False, atol=1e-5)  # each row exactly once


def test_concurrent_runs_do_not_duplicate_rows(folder, tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "ama", "attack", "--images", str(folder), "--e", "1", "--out", str(out),
            *SETTINGS[:2], "--n_iter", "10", "--batch-size", "1", "--device", "cpu"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    refused = [err for rc, err in results if rc == 2]
    assert all(rc in (0, 2) for rc, _ in results) and len(refused) <= 1, results
    for err in refused:  # the second run refuses at once, naming the holder
        assert re.search(r"error: .*: another run \(pid \d+\) is writing this folder", err)
    table = pd.read_csv(out / "attack_metrics.csv")
    assert len(table) == 7 * 2 and not table.duplicated(["file", "e", "quantized"]).any()


def test_single_image_refused_under_torchrun(folder, tmp_path, monkeypatch, capsys):
    _as_rank(monkeypatch, 0)
    rc = cli.main(["attack", "--image", str(folder / "im1.png"), "--out", str(tmp_path), *SETTINGS])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == "error: --image under torchrun would attack one image N times; give a folder with --images"

"""The run store: locks, keys, part files, the merge and its refusals; torchrun's environment."""
from __future__ import annotations

import fcntl
import json
import os
import threading

import pandas as pd
import pytest

from ama.paths import atomic_write
from ama.store.distributed import Launch, cpu_threads, launch_from_env, shard
from ama.store.parts import (PARTS_DIR, RankLock, RankPart, RunStoreError, check_writable, done_keys, merge, owners,
                             read_plans, read_table, setting_key)

SETTING = dict(model="tiny", e=1, mode="flip", optimizer="sign", restarts=0, n_iter=3, lamb=100.0, seed=0, target="")


def _rows(files, **over):
    s = {**SETTING, **over}
    return pd.DataFrame([dict(image=f.rsplit(".", 1)[0], file=f, **s, quantized=q, cam_cosine=0.5)
                         for f in files for q in (False, True)])


def test_launch_from_env_and_shards():
    assert launch_from_env({}) == Launch(0, 1, 0, 1, "")
    la = launch_from_env({"RANK": "1", "WORLD_SIZE": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "3",
                          "TORCHELASTIC_RUN_ID": "x"})
    assert (la.rank, la.world, la.distributed, la.run_id) == (1, 3, True, "x")
    items = list("abcdefg")
    shards = [shard(items, Launch(r, 3)) for r in range(3)]
    assert shards[1] == ["b", "e"] and sorted(sum(shards, [])) == items  # strided, no padding, no duplicates
    assert cpu_threads(Launch(0, 2, 0, 2), cores=16) == 8 and cpu_threads(Launch(0, 4, 0, 4), cores=2) == 1
    with pytest.raises(ValueError, match="RANK=3 and WORLD_SIZE=2 are inconsistent"):
        launch_from_env({"RANK": "3", "WORLD_SIZE": "2"})


def test_lock_refuses_a_second_holder(tmp_path):
    with RankLock(tmp_path) as held:
        with pytest.raises(RunStoreError, match=rf"another run \(pid {json.loads(held.path.read_text())['pid']}\)"):
            RankLock(tmp_path).acquire()
        RankLock(tmp_path, rank=1, world=2).release()  # another rank's lock of this folder ...
        with pytest.raises(RunStoreError, match="another run"):  # ... but not of a launch with another world
            RankLock(tmp_path, rank=1, world=2, run_id="other").acquire()
    RankLock(tmp_path).acquire().release()  # free again once released


def test_lock_waits_for_a_sibling_rank_that_has_not_written_itself_yet(tmp_path):
    """Rank 1 takes its lock, then writes who it is: rank 0 checking in between must not read an empty record as
    another launch (CI saw rank 0 refuse its own sibling)."""
    path = tmp_path / ".lock.rank1"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held, its record not written yet
    writer = threading.Timer(0.3, lambda: os.write(fd, json.dumps(dict(pid=1, run_id="", world=2)).encode()))
    writer.start()
    try:
        RankLock(tmp_path, rank=0, world=2).acquire().release()
    finally:
        writer.join()
        os.close(fd)


def test_merge_is_derived_from_parts_and_sorted(tmp_path):
    RankPart(tmp_path / PARTS_DIR, 1).append(_rows(["b.png", "d.png"]))
    RankPart(tmp_path / PARTS_DIR, 0).append(_rows(["c.jpg", "a.png"]))
    table, missing = merge(tmp_path)
    assert list(table.file[::2]) == ["a.png", "b.png", "c.jpg", "d.png"] and missing == []
    again, _ = merge(tmp_path)
    assert again.equals(table)  # merging twice gives the same table
    assert setting_key("a.png", SETTING, True) in done_keys(tmp_path)


def test_merge_refuses_duplicates(tmp_path):
    RankPart(tmp_path / PARTS_DIR, 0).append(_rows(["a.png", "b.png"]))
    RankPart(tmp_path / PARTS_DIR, 1).append(_rows(["b.png"]))
    with pytest.raises(RunStoreError, match=r"2 duplicate rows, e.g. b.png e=1 quantized=False in "
                                            r"attack_metrics.rank0.csv and attack_metrics.rank1.csv"):
        merge(tmp_path)


def test_merge_refuses_missing_rows(tmp_path):
    part = RankPart(tmp_path / PARTS_DIR, 0)
    part.write_plan(files=["a.png", "b.png", "bad.jpg"], settings=[SETTING], skipped={"bad.jpg": "not an image file"})
    part.append(_rows(["a.png"]))
    with pytest.raises(RunStoreError, match=r"2 expected row\(s\) missing, e.g. 'b.png\|tiny\|1.0"):
        merge(tmp_path, strict=True)
    _, missing = merge(tmp_path)
    assert len(missing) == 2
    part.append(_rows(["b.png"]))
    assert merge(tmp_path, strict=True)[1] == []  # the skipped file is not missing


@pytest.mark.parametrize("edit, message", [
    (lambda t: t[: t.rindex(",")], "row 5 has 12 fields, the header 13"),          # truncated last line
    (lambda t: t.replace("tiny,1,flip", "tiny,one,flip", 1), "row 2 has a bad value (e='one')"),
    (lambda t: t.replace("True", "yes", 1), "row 3 has a bad value (file='a.png', quantized='yes')"),
])
def test_edited_table_names_file_and_row(tmp_path, edit, message):
    RankPart(tmp_path / PARTS_DIR, 0).append(_rows(["a.png", "b.png"]))
    path = tmp_path / "parts" / "attack_metrics.rank0.csv"
    path.write_text(edit(path.read_text()))
    with pytest.raises(RunStoreError, match=f"{path}: {message}".replace("(", r"\(").replace(")", r"\)")):
        read_table(path)
    with pytest.raises(RunStoreError, match="attack_metrics.rank0.csv: row"):
        merge(tmp_path)


def test_check_writable(tmp_path):
    assert check_writable(tmp_path / "new" / "run").is_dir()
    assert list((tmp_path / "new" / "run").iterdir()) == []  # the probe is gone


def test_plans_and_owners(tmp_path):
    """A rank's plan says what it was asked to do and whether it finished; owners() finds an item two ranks hold."""
    RankPart(tmp_path, 0).write_plan(items=["a", "c"])
    RankPart(tmp_path, 1).write_plan(finished=True, items=["b"])
    plans = read_plans(tmp_path)
    assert sorted(plans) == [0, 1] and not plans[0]["finished"] and plans[1]["finished"] and plans[1]["items"] == ["b"]
    assert owners({r: p["items"] for r, p in plans.items()}, "image") == {"a": 0, "c": 0, "b": 1}
    with pytest.raises(RunStoreError, match="image 'c' was computed by ranks 0 and 1"):
        owners({0: ["a", "c"], 1: ["c"]}, "image")
    (tmp_path / "plan.rank2.json").write_text("{not json")
    with pytest.raises(RunStoreError, match="plan.rank2.json: unreadable plan"):
        read_plans(tmp_path)


def _write_many(path, text, times):
    for _ in range(times):
        atomic_write(path, text)


def test_two_processes_writing_one_file_never_rename_each_others_half(tmp_path):
    """``atomic_write``'s temporary file is its process's own: two writers of one file (two ranks writing one table)
    never fail on, or publish, the other's half-written file; the last complete write wins."""
    import multiprocessing

    target = tmp_path / "table.csv"
    texts = [f"writer {k}\n" * 20000 for k in range(2)]
    writers = [multiprocessing.get_context("fork").Process(target=_write_many, args=(target, t, 200)) for t in texts]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    assert [w.exitcode for w in writers] == [0, 0]
    assert target.read_text() in texts and not list(tmp_path.glob("*.tmp"))

"""The notebooks' per-image experiments split across processes: strided shards, one part file per rank, a merge.

``torchrun --standalone --nproc_per_node=N -m ama.runs.shards run EXPERIMENT --params params.json --run-dir D`` starts
``N`` ranks. Rank ``r`` takes images ``r, r + N, r + 2N, ...`` of the sorted image list (no padding, no duplicates),
computes on its own device (``cuda:LOCAL_RANK`` on GPUs; on the CPU with ``cores / N`` threads) and writes one part
file per table plus its plan, marked finished last, into ``D/parts/<experiment>/<key>-of-<N>/``
(:class:`ama.store.parts.RankPart`). No collective is used, so a dead rank cannot hang the others; a rerun skips ranks
already finished. ``python -m ama.runs.shards merge EXPERIMENT ...`` joins the parts (refusing missing or duplicated
images), orders the rows as a one-process run would, and writes the run's tables with their summaries.
``make reproduce NPROC=N`` does both before each notebook that has an experiment (:mod:`ama.runs.pipeline`).

``key`` is a hash of the parameters and of the ``ama`` source, so parts of another code version or other
parameters are never mixed in.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import pandas as pd

from ..inputs.images import load_records
from ..inputs.models import run_model
from ..inputs.protocol import run_records
from ..params import RunParams
from ..paths import atomic_write, resolve
from ..store import lineage
from ..store.distributed import Launch, launch_from_env, rank_device, shard
from ..store.parts import RankPart, RunStoreError, owners, part_files, read_plans
from ..store.tables import read_table, save_tables
from ..studies import experiments


class ShardError(RuntimeError):
    """Parts that cannot be merged (missing, duplicated); the message says what to do."""


def code_fingerprint() -> str:
    """A hash of the ``ama`` package's source files, its subpackages' included (parts of another code version are
    never reused)."""
    h = hashlib.sha256()
    package = Path(__file__).parent.parent
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode() + path.read_bytes())
    return h.hexdigest()[:12]


def parts_dir(run_dir, experiment: str, params: RunParams, world: int) -> Path:
    """The folder of one run's part files for ``experiment``: one per parameter set, code version and ``world`` (the number
    of processes), so that a change of any of them starts new parts."""
    key = hashlib.sha256((params.to_json() + code_fingerprint()).encode()).hexdigest()[:12]
    return resolve(run_dir) / "parts" / experiment / f"{key}-of-{world}"




def run_shard(experiment: str, params: RunParams, run_dir, launch: Launch | None = None,
              progress: bool = False) -> Path:
    """Compute this rank's share of ``experiment`` for every model of ``params``; return its parts folder.
    ``launch``: who this process is (default: from torchrun's environment, :func:`ama.store.distributed.launch_from_env`)."""
    launch = launch or launch_from_env()
    rank, world = launch.rank, launch.world
    folder = parts_dir(run_dir, experiment, params, world)
    if read_plans(folder).get(rank, {}).get("finished"):
        return folder
    device = rank_device(params.device, launch)
    mine = shard(run_records(params, run_dir), launch)
    tables: dict[str, list[pd.DataFrame]] = {}
    images, skipped, labels = {}, {}, {}
    for name in params.models:
        model = run_model(name, device)
        labels[name] = model.name  # the tables' model column (a factory's model names itself)
        data = load_records(mine, model)
        images[name], skipped[name] = data.names, [s[0] for s in data.skipped]
        if not data.names:
            continue
        got, _ = experiments.EXPERIMENTS[experiment].run(model, data.images, data.names, params, run_dir, progress,
                                                          data.labels)
        for table, df in got.items():
            tables.setdefault(table, []).append(df)
    for table, frames in tables.items():
        RankPart(folder, rank, table).write(pd.concat(frames, ignore_index=True))
    # written last: a killed rank leaves no finished plan and is recomputed
    RankPart(folder, rank).write_plan(finished=True, rank=rank, world=world, images=images, skipped=skipped,
                                      models=labels, tables=sorted(tables), sources=lineage.sources())
    return folder


def merge(experiment: str, params: RunParams, run_dir, world: int) -> dict[str, pd.DataFrame]:
    """Join the parts of all ``world`` ranks into the run's tables (written to ``run_dir/tables``) and return them."""
    folder = parts_dir(run_dir, experiment, params, world)
    plans = {r: p for r, p in read_plans(folder).items() if p.get("finished")}
    missing = [r for r in range(world) if r not in plans]
    if missing:
        raise ShardError(f"{experiment}: rank(s) {missing} of {world} have not finished (no finished plan in "
                         f"{folder}); rerun the same torchrun command: finished ranks are kept")
    names = [r.name for r in run_records(params, run_dir)]
    for model in params.models:
        try:
            seen = owners({r: [*p["images"].get(model, []), *p["skipped"].get(model, [])] for r, p in plans.items()},
                          f"{experiment}: image", f" of {model}")
        except RunStoreError as err:
            raise ShardError(f"{err} ({folder})") from None
        absent = [n for n in names if n not in seen]
        if absent:
            raise ShardError(f"{experiment}: {len(absent)} image(s) of {model} are in no part (first: {absent[0]}); "
                             f"delete {folder} and rerun")
    order = {plans[0]["models"][m]: k for k, m in enumerate(params.models)}
    position = {n: k for k, n in enumerate(names)}
    tables: dict[str, pd.DataFrame] = {}
    for table in sorted({t for p in plans.values() for t in p["tables"]}):
        files = part_files(folder, table)
        df = pd.concat([pd.read_csv(files[r]) for r in range(world) if table in plans[r]["tables"]],
                       ignore_index=True)
        key = df.model.map(order) * (len(names) + 1) + df.image.map(position)
        tables[table] = df.iloc[key.argsort(kind="stable")].reset_index(drop=True)
    tables.update(experiments.EXPERIMENTS[experiment].summaries(tables))
    for plan in plans.values():  # the ranks' lineage is the merged tables'
        for source in plan.get("sources", ()):
            lineage.touch(source)
    save_tables(tables, run_dir)
    atomic_write(folder / "merged.json", json.dumps(sorted(tables)) + "\n")
    return tables


def merged_tables(experiment: str, params: RunParams, run_dir) -> dict[str, pd.DataFrame] | None:
    """The tables a finished merge of ``experiment`` wrote for exactly these parameters and this code; else None."""
    root = resolve(run_dir) / "parts" / experiment
    for folder in sorted(root.glob("*-of-*")) if root.is_dir() else []:
        world = int(folder.name.rsplit("-of-", 1)[1])
        if folder == parts_dir(run_dir, experiment, params, world) and (folder / "merged.json").is_file():
            names = json.loads((folder / "merged.json").read_text())
            return {n: read_table(resolve(run_dir) / "tables", n) for n in names}  # .csv or .csv.gz; inherits lineage
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ama.runs.shards", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "merge"))
    parser.add_argument("experiment", choices=tuple(experiments.EXPERIMENTS))
    parser.add_argument("--params", required=True, help="the run's params.json")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--world", type=int, default=None, help="merge: the number of ranks (default WORLD_SIZE)")
    args = parser.parse_args(argv)
    try:
        params = RunParams.from_dict(json.loads(resolve(args.params).read_text()))
        launch = launch_from_env()
        if args.command == "run":
            folder = run_shard(args.experiment, params, args.run_dir, launch, progress=launch.rank == 0)
            print(f"== {args.experiment}: rank {launch.rank} of {launch.world} done -> {folder}", flush=True)
        else:
            world = args.world or launch.world
            tables = merge(args.experiment, params, args.run_dir, world)
            print(f"== {args.experiment}: merged {world} part(s) -> {len(tables)} tables", flush=True)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

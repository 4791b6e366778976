"""Per-image experiments split across processes: strided shards, one part file per rank, a merge.

``torchrun --standalone --nproc_per_node=N -m ama.shards run EXPERIMENT --params params.json --run-dir D``
starts ``N`` ranks. Rank ``r`` takes images ``r, r + N, r + 2N, ...`` of the sorted image list (no padding, no
duplicates), computes on its own device (``cuda:LOCAL_RANK`` on GPUs; on the CPU with ``cores / N`` threads)
and writes one CSV per table plus a ``rank<r>.done`` marker into ``D/parts/<experiment>/<key>-of-<N>/``.
No collective is used, so a dead rank cannot hang the others; a rerun skips ranks already done.
``python -m ama.shards merge EXPERIMENT ...`` joins the parts (refusing missing or duplicated images), orders
the rows as a one-process run would, and writes the run's tables with their summaries.

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

from .distributed import Launch, launch_from_env, rank_device, shard
from .params import RunParams


class ShardError(RuntimeError):
    """Parts that cannot be merged (missing, duplicated); the message says what to do."""


def code_fingerprint() -> str:
    """A hash of the ``ama`` package's source files (parts of another code version are never reused)."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:12]


def parts_dir(run_dir, experiment: str, params: RunParams, world: int) -> Path:
    from .paths import resolve

    key = hashlib.sha256((params.to_json() + code_fingerprint()).encode()).hexdigest()[:12]
    return resolve(run_dir) / "parts" / experiment / f"{key}-of-{world}"


def _records(params: RunParams):
    from .data import list_images

    p = params.fast_variant()
    return list_images(p.images, n=p.n_images, seed=p.seed)


def run_shard(experiment: str, params: RunParams, run_dir, launch: Launch | None = None,
              progress: bool = False) -> Path:
    """Compute this rank's share of ``experiment`` for every model of ``params``; return its parts folder.
    ``launch``: who this process is (default: from torchrun's environment, :func:`ama.distributed.launch_from_env`)."""
    from . import experiments
    from .data import load_records

    launch = launch or launch_from_env()
    rank, world = launch.rank, launch.world
    folder = parts_dir(run_dir, experiment, params, world)
    done = folder / f"rank{rank}.done"
    if done.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    device = rank_device(params.device, launch)
    mine = shard(_records(params), launch)
    tables: dict[str, list[pd.DataFrame]] = {}
    images, skipped, labels = {}, {}, {}
    for name in params.models:
        model = experiments.run_model(name, device)
        labels[name] = model.name  # the tables' model column (a factory's model names itself)
        data = load_records(mine, model)
        images[name], skipped[name] = data.names, [s[0] for s in data.skipped]
        if not data.names:
            continue
        got = experiments.run(experiment, model, data.images, data.names, params, progress, out_dir=run_dir)
        for table, df in got.items():
            tables.setdefault(table, []).append(df)
    for table, frames in tables.items():
        path = folder / f"{table}.rank{rank}.csv"
        tmp = path.with_suffix(".csv.tmp")
        pd.concat(frames, ignore_index=True).to_csv(tmp, index=False, float_format="%.6g")
        tmp.replace(path)
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(rank=rank, world=world, images=images, skipped=skipped, models=labels,
                                   tables=sorted(tables)), indent=1))
    tmp.replace(done)  # written last: a killed rank leaves no marker and is recomputed
    return folder


def merge(experiment: str, params: RunParams, run_dir, world: int) -> dict[str, pd.DataFrame]:
    """Join the parts of all ``world`` ranks into the run's tables (written to ``run_dir/tables``) and return them."""
    from . import experiments

    folder = parts_dir(run_dir, experiment, params, world)
    markers = {r: folder / f"rank{r}.done" for r in range(world)}
    missing = [r for r, m in markers.items() if not m.is_file()]
    if missing:
        raise ShardError(f"{experiment}: rank(s) {missing} of {world} have not finished (no marker in {folder}); "
                         "rerun the same torchrun command: finished ranks are kept")
    info = {r: json.loads(m.read_text()) for r, m in markers.items()}
    names = [r.name for r in _records(params)]
    tables: dict[str, pd.DataFrame] = {}
    for model in params.models:
        seen: dict[str, int] = {}
        for r, i in info.items():
            for image in [*i["images"].get(model, []), *i["skipped"].get(model, [])]:
                if image in seen:
                    raise ShardError(f"{experiment}: image {image!r} of {model} was computed by ranks {seen[image]} "
                                     f"and {r}; delete {folder} and rerun")
                seen[image] = r
        absent = [n for n in names if n not in seen]
        if absent:
            raise ShardError(f"{experiment}: {len(absent)} image(s) of {model} are in no part (first: {absent[0]}); "
                             f"delete {folder} and rerun")
    for table in sorted({t for i in info.values() for t in i["tables"]}):
        frames = [pd.read_csv(folder / f"{table}.rank{r}.csv", keep_default_na=True) for r in range(world)
                  if table in info[r]["tables"]]
        df = pd.concat(frames, ignore_index=True)
        order = {info[0]["models"][m]: k for k, m in enumerate(params.models)}
        position = {n: k for k, n in enumerate(names)}
        key = df.model.map(order) * (len(names) + 1) + df.image.map(position)
        tables[table] = df.iloc[key.argsort(kind="stable")].reset_index(drop=True)
    tables.update(experiments.summaries(tables))
    experiments.save_tables(tables, run_dir)
    (folder / "merged.json").write_text(json.dumps(sorted(tables)) + "\n")
    return tables


def merged_tables(experiment: str, params: RunParams, run_dir) -> dict[str, pd.DataFrame] | None:
    """The tables a finished merge of ``experiment`` wrote for exactly these parameters and this code; else None."""
    from .paths import resolve

    root = resolve(run_dir) / "parts" / experiment
    for folder in sorted(root.glob("*-of-*")) if root.is_dir() else []:
        world = int(folder.name.rsplit("-of-", 1)[1])
        if folder == parts_dir(run_dir, experiment, params, world) and (folder / "merged.json").is_file():
            names = json.loads((folder / "merged.json").read_text())
            return {n: pd.read_csv(resolve(run_dir) / "tables" / f"{n}.csv") for n in names}
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ama.shards", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "merge"))
    parser.add_argument("experiment", choices=("occlusion", "receptive_fields", "attack"))
    parser.add_argument("--params", required=True, help="the run's params.json")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--world", type=int, default=None, help="merge: the number of ranks (default WORLD_SIZE)")
    args = parser.parse_args(argv)
    from .paths import resolve

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

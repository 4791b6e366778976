#!/usr/bin/env python
"""The attack's capacity: does ten times the budget fool more images? (``SCIENCE.md`` section 6)

Attacks the images of a run (its ``selection.csv``, written first when missing: by default the default run's 8
correctly classified ImageNet images) with the strongest optimiser's defaults at e = 1, 2 and at 100 and 1000 passes
per image (:func:`ama.studies.ablation.capacity_study`), fooled measured against the true label, and writes the per-image
table and its summary (:func:`ama.studies.ablation.capacity_summary`: Wilson intervals, images newly fooled at 1000
passes) as CSV and Markdown. The committed result is ``results/reference/capacity/`` (about 8 minutes on 2 CPU cores)::

    .venv/bin/python tools/capacity.py --out results/reference/capacity
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from ama.inputs.images import load_records
    from ama.inputs.models import run_model
    from ama.inputs.protocol import run_records
    from ama.params import RunParams
    from ama.store.tables import atomic_write, write_csv
    from ama.studies import ablation
    from ama.studies.attack_experiments import with_labels

    default = RunParams()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=f"results/{default.run_name()}",
                        help="a run folder: its params.json (else the kit defaults) and selection.csv (written when "
                             "missing) say which model and images")
    parser.add_argument("--e", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--budgets", type=int, nargs="+", default=list(ablation.CAPACITY_BUDGETS))
    parser.add_argument("--out", default="results/capacity")
    args = parser.parse_args(argv)

    run_dir, out = ROOT / args.run_dir, ROOT / args.out
    params_file = run_dir / "params.json"
    params = RunParams.from_dict(json.loads(params_file.read_text())) if params_file.is_file() else default
    run_dir.mkdir(parents=True, exist_ok=True)
    records = run_records(params, run_dir)
    frames = []
    for name in params.models:
        model = run_model(name, params.device)
        data = load_records(records, model)
        table = ablation.capacity_study(model, data.images, data.names, e=args.e, budgets=args.budgets,
                                        lamb=params.lamb, seed=params.seed)
        frames.append(with_labels(table, data.names, data.labels))
    import pandas as pd

    table = pd.concat(frames, ignore_index=True)
    summary = ablation.capacity_summary(table)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / "capacity.csv")
    write_csv(summary, out / "capacity_summary.csv")
    atomic_write(out / "capacity_summary.md", summary.round(3).to_markdown(index=False) + "\n")
    print(summary.round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How much does a trained model's test error move when the test set is drawn again? The
error of each checkpoint on several draws of its variant's test set, as JSON.

Table 1 measures every cell on one fixed test set per variant: the 10,000 MNIST test digits,
each distorted once with the variant's seed (:data:`stnlib.paper.TEST_SEEDS`). The paper
distorted the same digits with draws of its own. How much of a gap between two errors can
the draw alone explain? This script distorts the same digits afresh ``--draws`` times
(:func:`stnlib.paper.draw_test_seeds`; the first draw is the fixed test set, so its error is
the one ``table1.json`` records) and tests each checkpoint on every draw: the spread of
those errors is the noise the test set's draw adds to one number of the table. The
checkpoints stay fixed, so the spread of training seeds comes on top.

For every checkpoint ``<model>_<variant>.pt`` (as ``stnlib paper --keep-checkpoints``
names them; any cell, with the paper's spread of distortions) it records the errors, their
mean, standard deviation, lowest and highest, the paper's number and how many draws reach it.

    python benchmarks/draws.py results/checkpoints/stcnn-aff_R.pt --draws 20 \\
        --out results/draws.json

A record per checkpoint file name; the file is read again and updated, so several runs can
add to one file. Prints the records as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from stnlib import paper
from stnlib.bench import check_positive
from stnlib.checkpoint import CheckpointError, load_checkpoint
from stnlib.train import evaluate


def draw_errors(models: dict[str, torch.nn.Module], variant: str, seeds: list[int],
                test_size: int | None = None) -> tuple[dict[str, list[float]], int]:
    """% test error of each model (all of one ``variant``) on the test set of each of
    ``seeds`` (:func:`stnlib.paper.draw_test_seeds`): ``({name: [error, ...]}, number of
    test images)``. Each draw is distorted once and shared by the models; a bar on stderr
    when it is a terminal."""
    errors: dict[str, list[float]] = {name: [] for name in models}
    test_images = 0
    for seed in tqdm(seeds, desc=f"{variant} test draws", unit="draw", disable=None):
        test_set = paper.distorted_test_set(variant, test_size, test_seed=seed)
        test_images = len(test_set)
        for name, model in models.items():
            errors[name].append(100 * (1 - evaluate(model, test_set)))
    return errors, test_images


def summary(cell: str, errors: list[float], seeds: list[int], test_images: int
            ) -> dict[str, Any]:
    """The record of one checkpoint: its errors (%) on the draws and what they say."""
    paper_pct = paper.PAPER_ERROR[cell]
    return {"cell": cell, "error_pct": [round(e, 3) for e in errors],
            "mean_pct": round(statistics.fmean(errors), 3),
            "sd_pct": round(statistics.stdev(errors), 3) if len(errors) > 1 else None,
            "min_pct": round(min(errors), 3), "max_pct": round(max(errors), 3),
            "paper_error_pct": paper_pct,
            "draws_at_or_below_paper": sum(round(e, 3) <= paper_pct for e in errors),
            "test_seeds": seeds, "test_images": test_images}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path,
                        help="checkpoints named <model>_<variant>.pt")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write or update")
    parser.add_argument("--draws", type=int, default=20,
                        help="test sets per variant; the first is the fixed one (default 20)")
    parser.add_argument("--test-size", type=int, default=None,
                        help="the first N test digits (default: all 10,000; for tests)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        check_positive(args, "draws", "test_size", "threads")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        cells = {path: paper.checkpoint_cell(path) for path in args.checkpoints}
        if len({path.name for path in cells}) < len(cells):
            raise ValueError("two checkpoints share a file name, which keys their records: "
                             "write each results folder's checkpoints to its own --out")
        records = paper.read_checkpoint_records(args.out)  # a broken --out: before any work
        by_variant: dict[str, dict[str, torch.nn.Module]] = {}
        for path, cell in cells.items():
            by_variant.setdefault(cell.split("/")[1], {})[path.name] = load_checkpoint(path)
        for variant, models in by_variant.items():
            seeds = paper.draw_test_seeds(variant, args.draws)
            errors, test_images = draw_errors(models, variant, seeds, args.test_size)
            for name, model_errors in errors.items():
                records[name] = summary(paper.checkpoint_cell(name), model_errors, seeds,
                                        test_images)
    except (ValueError, CheckpointError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    paper.write_checkpoint_records(
        args.out, records,
        what="% test error of each checkpoint on its variant's test digits distorted afresh "
             "with each of test_seeds (the first: the fixed test set of table1.json); "
             "mean_pct, sd_pct, min_pct, max_pct over the draws; draws_at_or_below_paper: "
             "how many reach paper_error_pct",
        command="python benchmarks/draws.py CHECKPOINT ... --draws N --out FILE")
    print(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

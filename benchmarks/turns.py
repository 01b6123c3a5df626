"""How much of each turn do trained ST models undo? ``paper.turn_summary`` of R and RTS
checkpoints, as JSON: a record of what a checkpoint's transformer does that stays in the
repository when the checkpoint itself is too large to commit (or was trained elsewhere).

For every checkpoint ``<model>_<variant>.pt`` (as ``stnlib paper --keep-checkpoints``
names them; variant R or RTS) it runs the fixed test set of the variant through the model
(:func:`stnlib.paper.remaining_turn`) and records the test error, the error on the digits
turned far (:data:`FAR_DEGREES`: 75 degrees or more on R, 35 on RTS), the share of the turn
the transformer undoes and the turn it leaves on those far-turned digits. Notebook 06
prints such files.

    python benchmarks/turns.py /tmp/large-loc/checkpoints/stcnn-aff_R.pt \\
        --out results/large-loc/turns.json

A record per checkpoint file name; the file is read again and updated, so several runs can
add to one file. Prints the records as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from stnlib import paper
from stnlib.bench import check_positive
from stnlib.checkpoint import CheckpointError, load_checkpoint

#: "Far-turned" digits: turned this many degrees or more either way (R: ±90, RTS: ±45).
FAR_DEGREES = {"R": 75.0, "RTS": 35.0}


def cell_of(path: Path) -> str:
    """``stcnn-aff_R.pt`` -> ``"stcnn-aff/R"`` (a ValueError for other names)."""
    message = (f"{path.name}: expected an R or RTS checkpoint of an ST model named "
               "like stcnn-aff_R.pt (as stnlib paper --keep-checkpoints writes it)")
    try:
        cell = paper.checkpoint_cell(path)
    except ValueError:
        raise ValueError(message) from None
    model, variant = cell.split("/")
    if variant not in FAR_DEGREES or paper.MODELS[model][1] is None:
        raise ValueError(message)
    return cell


def summary(path: Path, test_size: int | None = None) -> dict[str, Any]:
    """The turn summary of one checkpoint, with what the model was."""
    cell = cell_of(path)
    variant = cell.split("/")[1]
    model = load_checkpoint(path)
    turns = paper.remaining_turn(model, variant, test_size)
    far = FAR_DEGREES[variant]
    numbers = {key: round(value, 2) for key, value in paper.turn_summary(turns, far).items()}
    return {"cell": cell, **numbers, "far_degrees": far, "test_images": len(turns["drawn"]),
            "model_config": model.config,
            "parameters": sum(p.numel() for p in model.parameters())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path,
                        help="checkpoints named <model>_<variant>.pt, variant R or RTS")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write or update")
    parser.add_argument("--test-size", type=int, default=None,
                        help="the first N test digits (default: all 10,000; for tests)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        check_positive(args, "test_size", "threads")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        for path in args.checkpoints:
            cell_of(path)  # every name checked before any work
        records = paper.read_checkpoint_records(args.out)
        for path in args.checkpoints:
            records[path.name] = summary(path, args.test_size)
    except (ValueError, CheckpointError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    paper.write_checkpoint_records(
        args.out, records,
        what="stnlib.paper.turn_summary of each checkpoint on its variant's fixed test set: "
             "error_pct, error_pct_far (digits turned far_degrees or more), undone_pct (share "
             "of the turn undone), left_far_deg (mean turn left on the far-turned digits)",
        command="python benchmarks/turns.py CHECKPOINT ... --out FILE")
    print(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

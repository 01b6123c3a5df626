"""How well could a perfect spatial transformer do? The Table 1 CNN, trained and tested on
distorted digits that were warped back with the exact inverse of their own distortion.

What it answers: a spatial transformer can at best undo the distortion. Its classifier then
sees the digit upright and at full size, but with what the distortion lost: ink pushed off
the canvas, detail blurred by two bilinear interpolations (the distortion's and the
transformer's). This script hands the CNN exactly that (``stnlib.distort.undo``, the
"oracle": it knows the drawn parameters), so its error is a reference for what an ST-CNN
with the same classifier and budget can reach on a variant. ``none`` trains the same CNN on
plain MNIST, with nothing lost. Neither is a hard floor. On plain MNIST, R, RTS and P at
``--sigma-px 3`` these CNNs end with a training loss of 0.003 or less, the ST-CNNs near
0.02: a learned transformer leaves some variation in the digits it hands on, which seems to
help its classifier generalise (P at σ = 3 px: the oracle 0.85%, the affine ST-CNN 0.66%).
Same recipe as ``python -m stnlib paper`` (Adam, one-cycle, lr 0.002, batch 64, seed 0,
the fixed test set of each variant).

    python benchmarks/oracle.py --variants none,R,P --epochs 30 --threads 1 \\
        --results results/oracle.json

The recipe options (``--batch-size``, ``--lr``, ``--label-smoothing``, ``--padding``,
``--seed``, ``--device``) mean what they mean for ``stnlib paper``: the oracle of another
recipe, e.g. the one of ``results/gpu-same-padding/`` on a GPU::

    python benchmarks/oracle.py --variants none,R,RTS --epochs 62 --batch-size 256 \\
        --lr 0.004 --label-smoothing 0.1 --padding same --device cuda \\
        --results results/gpu-same-padding/oracle.json

Each variant's record is written as soon as it is done (the file is read again first, so
two processes with different ``--variants`` can share it); a variant already in the file is
skipped unless ``--force``. Prints the records as JSON. ``--sigma-px`` (P only) draws P's
corner offsets with another spread than the paper's 5 pixels, as ``stnlib paper
--sigma-px`` does; write those records to a file of their own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from stnlib import paper
from stnlib.bench import check_positive
from stnlib.checkpoint import atomic_write_text
from stnlib.data import mnist
from stnlib.distort import oracle_transform
from stnlib.train import evaluate, fit

VARIANTS = ("none", "R", "RTS", "P", "TC")  # E's spline has no exact inverse
TABLE = Path(__file__).resolve().parents[1] / "results"  # the committed Table 1


def load(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ValueError(f"--results {path} is a folder: name the JSON file, e.g. "
                         "results/oracle.json")
    if not path.exists():
        return {"experiment": "the Table 1 CNN on digits undone by a perfect transformer",
                "variants": {}}
    return paper.load_json(path, otherwise="move it away")


def run_variant(variant: str, budget: paper.Budget) -> dict[str, Any]:
    """Train the 28x28 CNN of Table 1 on ``variant`` undone by the oracle; its record."""
    device = budget.device  # checked by _run, before any variant trains
    model = paper.cell_model("cnn/R", budget.sampler, budget.seed,  # the 28x28 CNN
                             budget.padding).to(device)
    train_set = mnist(train=True)
    if budget.train_size is not None:
        train_set = train_set.subset(budget.train_size)
    if variant == "none":
        test_set = mnist(train=False)
        if budget.test_size is not None:
            test_set = test_set.subset(budget.test_size)
    else:
        test_set = paper.oracle_test_set(variant, budget.test_size, budget.sigma_px)
    history = fit(model, train_set, None, epochs=budget.epochs, batch_size=budget.batch_size,
                  lr=budget.lr, optimizer=budget.optimizer, schedule=budget.schedule,
                  label_smoothing=budget.label_smoothing,
                  seed=budget.seed, progress=True, threads=budget.threads,
                  train_transform=None if variant == "none"
                  else oracle_transform(variant, budget.sigma_px))
    error = 100 * (1 - evaluate(model, test_set))
    record = {"variant": variant, "error_pct": round(error, 3), "model": "CNN",
              "epochs": budget.epochs, "steps": history.steps,
              "batch_size": min(budget.batch_size, len(train_set)),
              "train_images": len(train_set), "optimizer": budget.optimizer,
              "schedule": budget.schedule, "lr": budget.lr, "seed": budget.seed,
              **({"label_smoothing": budget.label_smoothing}
                 if budget.label_smoothing else {}),
              **({"padding": budget.padding} if budget.padding != "valid" else {}),
              "threads": budget.threads, "device": paper.device_name(device),
              **history.trained_on(),
              "train_s": round(history.train_s, 1),
              "final_train_loss": round(history.train_loss[-1], 4),
              **({"sigma_px": budget.sigma_px}
                 if budget.sigma_px is not None and variant != "none" else {}),
              "test_images": len(test_set), "torch": torch.__version__,
              "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if variant != "none":
        record.update(test_seed=paper.TEST_SEEDS[variant],
                      paper_st_cnn_pct=paper.PAPER_ERROR[f"stcnn-aff/{variant}"])
        if budget.sigma_px is None and _table_recipe(budget):  # context: the table's
            # cells share this test set and (but for epochs) this recipe
            table = _table_errors(variant)
            record.update(st_cnn_pct={c: e for c, e in table.items()
                                      if c.startswith("stcnn-")},
                          cnn_pct=table.get(f"cnn/{variant}"))
    return record


def _table_recipe(budget: paper.Budget) -> bool:
    """Whether ``budget`` trains as the table's cells did (epochs aside)."""
    table = paper.Budget()
    return all(getattr(budget, name) == getattr(table, name)
               for name in ("batch_size", "lr", "optimizer", "schedule", "label_smoothing",
                            "padding", "seed"))


def _table_errors(variant: str) -> dict[str, float]:
    """The finished cells of ``variant`` in results/table1.json when this ran (context):
    cell -> % error."""
    return {c: r["error_pct"] for c, r in paper.finished_cells(TABLE).items()
            if c.endswith(f"/{variant}")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="none,R,P",
                        help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", default="results/oracle.json")
    parser.add_argument("--train-size", type=int, default=None, help="for tests only")
    parser.add_argument("--test-size", type=int, default=None, help="for tests only")
    parser.add_argument("--sigma-px", type=float, default=None,
                        help="P only: the corner offsets' spread in pixels (default: the "
                             "paper's 5)")
    table = paper.Budget()
    parser.add_argument("--batch-size", type=int, default=table.batch_size)
    parser.add_argument("--lr", type=float, default=table.lr)
    parser.add_argument("--label-smoothing", type=float, default=table.label_smoothing,
                        help="smooth the cross-entropy targets by this much (default 0: none)")
    parser.add_argument("--padding", choices=paper.PADDINGS, default=table.padding,
                        help="the CNN's convolutions: 'valid' (default, the table's) or "
                             "'same'")
    parser.add_argument("--seed", type=int, default=table.seed)
    parser.add_argument("--device", default="cpu",
                        help="where to train: 'cpu' (default) or 'cuda' (a GPU, if torch "
                             "sees one)")
    parser.add_argument("--force", action="store_true", help="retrain variants already done")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except ValueError as error:  # bad arguments or results file: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"--variants must name some of {', '.join(VARIANTS)}, got "
                         f"{args.variants!r}")
    check_positive(args, "epochs", "threads", "train_size", "test_size", "batch_size", "lr")
    if not 0 <= args.label_smoothing < 1:
        raise ValueError(f"--label-smoothing must be in [0, 1) (0: none), got "
                         f"{args.label_smoothing}")
    device = paper.check_device(args.device)
    # A bad --sigma-px is refused up front, before any variant trains; the paper's own
    # spread counts as unset (no sigma_px in the record), as in `stnlib paper`.
    sigma_px = args.sigma_px
    for variant in variants:
        if variant != "none" and sigma_px is not None:
            sigma_px = oracle_transform(variant, sigma_px).sigma_px
    budget = paper.Budget(epochs=args.epochs, threads=args.threads,
                          train_size=args.train_size, test_size=args.test_size,
                          sigma_px=sigma_px, batch_size=args.batch_size, lr=args.lr,
                          label_smoothing=args.label_smoothing, padding=args.padding,
                          seed=args.seed, device=device)
    path = Path(args.results)
    done = load(path)["variants"]
    for variant in variants:
        if variant in done and not args.force:
            print(f"{variant}: done already ({done[variant]['error_pct']:.2f}% error), "
                  "skipped", file=sys.stderr)
            continue
        record = run_variant(variant, budget)
        results = load(path)  # what another process wrote meanwhile
        results["variants"][variant] = record
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(results, indent=1) + "\n", path)
        done = results["variants"]
    print(json.dumps({v: done[v] for v in variants if v in done}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Draw docs/stn_pipeline.png, the README's figure: rotated test digits (top row) and what the
spatial transformers of the committed paper checkpoints (results/checkpoints/) make of them.

    python docs/make_readme_figure.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from stnlib import paper, viz  # noqa: E402
from stnlib.checkpoint import load_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

inputs = paper.distorted_test_set("R", size=10).float_images()
with torch.no_grad():
    outputs = {
        f"ST-CNN {kind}": load_checkpoint(ROOT / "results" / "checkpoints" / f"stcnn-{kind}_R.pt")
        .rectify(inputs)
        for kind in ("aff", "proj", "tps")
    }
figure = viz.rectification_figure(inputs, outputs)
figure.suptitle("Rotated MNIST digits (top) and the output of three spatial transformers", y=1.06)
figure.savefig(ROOT / "docs" / "stn_pipeline.png", dpi=90, bbox_inches="tight")

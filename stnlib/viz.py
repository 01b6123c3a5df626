"""Every figure the notebooks show, one function per figure.

Functions take tensors (CPU, any float dtype) and return the matplotlib ``Figure``
(or draw on a given ``ax``), so notebooks stay one line per figure and tests can
check that a figure is built without showing it.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------
# Notebooks 00-04: pipeline, affine math, grids and the sampler.
# (Imports are local so that each section of this shared module stands alone.)
# ---------------------------------------------------------------------------


def _figure(width: float, height: float):
    """A pyplot-free Figure: it is shown once in Jupyter and never leaks between cells."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _gray(ax, image, title: str | None = None, vmin: float | None = 0.0,
          vmax: float | None = 1.0) -> None:
    """Draw one (H, W) or (1, H, W) image on ``ax`` in gray, without ticks."""
    import torch

    img = torch.as_tensor(image).detach().float().cpu()
    img = img.squeeze(0) if img.dim() == 3 else img
    if img.dim() != 2:
        raise ValueError(f"image: expected shape (H, W) or (1, H, W), got {tuple(img.shape)}")
    ax.imshow(img.numpy(), cmap="gray", vmin=vmin, vmax=vmax)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def image_row(images, titles=None, suptitle: str | None = None, size: float = 1.6):
    """Images side by side. ``images``: a sequence of (H, W) / (1, H, W) tensors, or a
    tensor (N, 1, H, W); ``titles``: one str per image (optional). Returns the Figure."""
    images = list(images)
    if not images:
        raise ValueError("images: expected at least one image, got an empty sequence")
    titles = list(titles) if titles is not None else [None] * len(images)
    if len(titles) != len(images):
        raise ValueError(f"titles: expected {len(images)} titles (one per image), "
                         f"got {len(titles)}")
    fig = _figure(size * len(images), size + (0.5 if suptitle else 0.2))
    for ax, image, title in zip(fig.subplots(1, len(images), squeeze=False)[0], images, titles,
                                strict=True):
        _gray(ax, image, title)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def pipeline_diagram():
    """The spatial transformer in one picture: U -> localization net -> theta -> grid
    generator -> sampler -> V, with U also feeding the sampler. Returns the Figure."""
    fig = _figure(9.0, 2.4)
    ax = fig.add_subplot()
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 3)
    ax.axis("off")
    boxes = {  # name: (centre x, centre y, text, colour)
        "U": (0.8, 1.4, "input U\n(N, C, H, W)", "#dddddd"),
        "loc": (2.7, 2.3, "localization net\nf_loc(U)", "#cfe2f3"),
        "theta": (4.7, 2.3, "theta\n(N, 2, 3)", "#fff2cc"),
        "grid": (6.7, 2.3, "grid generator\nT_theta(G)", "#d9ead3"),
        "sampler": (6.7, 0.6, "sampler\nbilinear", "#f4cccc"),
        "V": (9.0, 0.6, "output V\n(N, C, H', W')", "#dddddd"),
    }
    texts = {
        name: ax.text(x, y, text, ha="center", va="center", fontsize=9,
                      bbox={"boxstyle": "round,pad=0.4", "fc": color, "ec": "#555555"})
        for name, (x, y, text, color) in boxes.items()
    }
    arrows = [("U", (1, 0.8), "loc", (0, 0.5)), ("loc", (1, 0.5), "theta", (0, 0.5)),
              ("theta", (1, 0.5), "grid", (0, 0.5)), ("grid", (0.5, 0), "sampler", (0.5, 1)),
              ("U", (1, 0.2), "sampler", (0, 0.5)), ("sampler", (1, 0.5), "V", (0, 0.5))]
    for start, start_at, end, end_at in arrows:
        ax.annotate("", xy=end_at, xycoords=texts[end], xytext=start_at,
                    textcoords=texts[start], arrowprops={"arrowstyle": "->", "lw": 1.4})
    ax.text(5.0, 2.9, "spatial transformer (differentiable end to end)", ha="center",
            fontsize=10, style="italic")
    return fig


def align_corners_figure(width: int = 4):
    """Where normalized -1 and +1 fall on a row of ``width`` pixels, for
    ``align_corners=False`` (image edges) and ``True`` (centres of the corner pixels)."""
    fig = _figure(6.0, 3.6)
    axes = fig.subplots(2, 1)
    for ax, align in zip(axes, (False, True), strict=True):
        for col in range(width):
            ax.add_patch(_rect((col - 0.5, -0.5), 1, 1, fc="#eeeeee" if col % 2 else "#cccccc"))
            ax.plot(col, 0, "o", color="k", ms=4)
            if align:
                x = 2 * col / (width - 1) - 1
            else:
                x = (2 * col + 1) / width - 1
            ax.annotate(f"{x:+.2f}", (col, 0), (col, -0.3), ha="center", fontsize=8)
        ends = (0, width - 1) if align else (-0.5, width - 0.5)
        for end, label in zip(ends, ("-1", "+1"), strict=True):
            ax.plot([end, end], [-0.55, 0.75], color="tab:red", lw=1.5, ls="--")
            ax.text(end, 0.8, label, color="tab:red", ha="center", va="bottom", fontsize=9)
        ax.set_xlim(-0.8, width - 0.2)
        ax.set_ylim(-0.6, 1.15)
        ax.set_aspect("equal")
        ax.set_yticks([])
        ax.set_xticks(range(width))
        ax.set_xticklabels([f"pixel {c}" for c in range(width)], fontsize=8)
        ax.set_title(f"align_corners={align}: -1/+1 at the "
                     f"{'corner pixel centres' if align else 'image edges'}", fontsize=9)
    return fig


def _rect(xy, w, h, **kwargs):
    from matplotlib.patches import Rectangle

    return Rectangle(xy, w, h, ec="#888888", **kwargs)


def forward_splat(image, theta):
    """Forward mapping, the way NOT to warp: push every source pixel of ``image`` (H, W) to
    the nearest target pixel of ``inverse(theta)`` (theta (2, 3) maps target -> source in
    normalized coordinates, align_corners=False). Target pixels no source pixel lands on
    stay 0: the holes. Returns the (H, W) target image."""
    import torch

    img = torch.as_tensor(image).detach().float().reshape(-1, *torch.as_tensor(image).shape[-2:])
    img = img[0]
    h, w = img.shape
    theta = torch.as_tensor(theta, dtype=torch.float64).reshape(2, 3)
    full = torch.cat([theta, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)])
    inverse = torch.linalg.inv(full)[:2]
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    src = torch.stack([(2 * xs + 1) / w - 1, (2 * ys + 1) / h - 1, torch.ones(h, w)], -1)
    dst = src.double() @ inverse.T
    col = torch.round(((dst[..., 0] + 1) * w - 1) / 2).long()
    row = torch.round(((dst[..., 1] + 1) * h - 1) / 2).long()
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    out = torch.zeros(h, w)
    out[row[inside], col[inside]] = img[inside]
    return out


def grids_over_images(image, grids, outputs, titles=None, align_corners: bool = False,
                      every: int = 3):
    """For each sampling grid: the input ``image`` (H, W) with the grid's points drawn where
    they read it (top row), and the sampled output (bottom row). ``grids``: list of
    (H_out, W_out, 2) normalized (x, y); ``outputs``: list of (H_out, W_out) images;
    ``every``: draw every k-th grid line. Returns the Figure."""
    import torch

    img = torch.as_tensor(image).detach().float().squeeze()
    h, w = img.shape
    titles = list(titles) if titles is not None else [""] * len(grids)
    fig = _figure(2.0 * len(grids), 4.2)
    axes = fig.subplots(2, len(grids), squeeze=False)
    for k, (grid, out, title) in enumerate(zip(grids, outputs, titles, strict=True)):
        grid = torch.as_tensor(grid).detach().double().squeeze(0)
        if align_corners:
            px = (grid[..., 0] + 1) / 2 * (w - 1)
            py = (grid[..., 1] + 1) / 2 * (h - 1)
        else:
            px = ((grid[..., 0] + 1) * w - 1) / 2
            py = ((grid[..., 1] + 1) * h - 1) / 2
        top, bottom = axes[0, k], axes[1, k]
        _gray(top, img, title)
        for line in range(0, px.shape[0], every):
            top.plot(px[line].numpy(), py[line].numpy(), color="tab:orange", lw=0.8)
        for line in range(0, px.shape[1], every):
            top.plot(px[:, line].numpy(), py[:, line].numpy(), color="tab:orange", lw=0.8)
        top.plot(px[0, 0].item(), py[0, 0].item(), "o", color="tab:red", ms=4)
        top.set_xlim(-0.5 - w * 0.35, w - 0.5 + w * 0.35)
        top.set_ylim(h - 0.5 + h * 0.35, -0.5 - h * 0.35)
        _gray(bottom, out, "output")
    axes[0, 0].set_ylabel("grid on input", fontsize=9)
    return fig


def bilinear_figure(image, x: float, y: float):
    """Bilinear interpolation on a tiny ``image`` (H, W) at pixel coordinates (x, y): the
    pixel values, the sample point and the weight of each of its four neighbours."""
    import math

    import torch

    img = torch.as_tensor(image).detach().double()
    h, w = img.shape
    x0, y0 = math.floor(x), math.floor(y)
    fig = _figure(1.3 * w + 1.2, 1.3 * h + 0.6)
    ax = fig.add_subplot()
    ax.imshow(img.numpy(), cmap="Blues", vmin=float(img.min()) - 1, vmax=float(img.max()) + 1)
    for r in range(h):
        for c in range(w):
            ax.text(c, r, f"{img[r, c].item():g}", ha="center", va="center", fontsize=11)
    for dy in (0, 1):
        for dx in (0, 1):
            c, r = x0 + dx, y0 + dy
            if 0 <= c < w and 0 <= r < h:
                weight = (1 - abs(x - c)) * (1 - abs(y - r))
                ax.plot([x, c], [y, r], color="tab:red", lw=0.5 + 3 * weight)
                ax.text(c, r + 0.3, f"w={weight:.3g}", ha="center", va="center", fontsize=8,
                        color="tab:red", bbox={"fc": "white", "ec": "none", "pad": 1})
    ax.plot(x, y, "*", color="tab:red", ms=14)
    ax.set_xticks(range(w))
    ax.set_yticks(range(h))
    ax.set_xlabel("x (column)")
    ax.set_ylabel("y (row)")
    ax.set_title(f"sample at (x={x:g}, y={y:g})", fontsize=10)
    return fig


def subgradient_figure(xs, values, grads):
    """A sample's value as its x coordinate moves (left) and d value / d x (right): linear
    pieces with kinks at the pixel centres, where autograd picks one side (sub-gradient).
    ``xs``, ``values``, ``grads``: 1D tensors of the same length."""
    fig = _figure(8.0, 2.6)
    left, right = fig.subplots(1, 2)
    xs, values, grads = (_numpy(t) for t in (xs, values, grads))
    left.plot(xs, values, color="tab:blue")
    left.set_xlabel("x (pixel coordinate)")
    left.set_title("sampled value", fontsize=10)
    right.plot(xs, grads, ".", ms=3, color="tab:red")
    right.set_xlabel("x (pixel coordinate)")
    right.set_title("d value / d x (autograd)", fontsize=10)
    for ax in (left, right):
        for c in range(int(xs.min()), int(xs.max()) + 1):
            ax.axvline(c, color="#bbbbbb", lw=0.6, zorder=0)
    return fig


def _numpy(tensor):
    import torch

    return torch.as_tensor(tensor).detach().double().cpu().numpy()


def theta_gradient_figure(image, grid_grad, theta_grad, every: int = 2):
    """How a loss wants the sampling to move. Left: ``image`` (H, W) with arrows of
    -dL/dgrid (``grid_grad`` (H, W, 2), normalized x, y) on every ``every``-th pixel.
    Right: the six entries of dL/dtheta (``theta_grad`` (2, 3)). Returns the Figure."""
    import torch

    img = torch.as_tensor(image).detach().float().squeeze()
    g = -torch.as_tensor(grid_grad).detach().double().squeeze(0)
    h, w = img.shape
    fig = _figure(7.5, 3.2)
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.2])
    _gray(left, img, "-dL/dgrid: where each sample wants to move")
    ys, xs = torch.meshgrid(torch.arange(0, h, every), torch.arange(0, w, every), indexing="ij")
    u, v = g[::every, ::every, 0] * w / 2, g[::every, ::every, 1] * h / 2  # in pixels
    longest = float(torch.sqrt(u**2 + v**2).max().clamp_min(1e-12))
    left.quiver(xs.numpy(), ys.numpy(), u.numpy(), v.numpy(), color="tab:orange",
                angles="xy", scale_units="xy", scale=longest / (2.5 * every))
    names = ["a11 (x<-x)", "a12 (x<-y)", "tx", "a21 (y<-x)", "a22 (y<-y)", "ty"]
    values = torch.as_tensor(theta_grad).detach().double().reshape(6)
    right.barh(range(6), (-values).numpy(), color="tab:orange")
    right.set_yticks(range(6))
    right.set_yticklabels(names, fontsize=8)
    right.invert_yaxis()
    right.axvline(0, color="k", lw=0.6)
    right.set_title("-dL/dtheta: one gradient step", fontsize=9)
    return fig


# ---------------------------------------------------------------------------
# Notebook 06: the paper's distorted MNIST (owner: issue 7).
# ---------------------------------------------------------------------------


def distortion_variants_figure(samples, size: float = 1.1):
    """One row per variant of distorted digits. ``samples``: dict name -> tensor
    (n, 1, S, S) in [0, 1] (S may differ between rows). Returns the Figure."""
    rows = list(samples.items())
    if not rows:
        raise ValueError("samples: expected a dict of variant name -> (n, 1, S, S) images")
    cols = max(len(images) for _, images in rows)
    fig = _figure(size * cols + 0.6, size * len(rows))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for (name, images), row in zip(rows, axes, strict=True):
        for j, ax in enumerate(row):
            if j < len(images):
                _gray(ax, images[j])
                if j == 0:
                    ax.set_ylabel(f"{name}\n{images.shape[-1]}x{images.shape[-1]}",
                                  fontsize=9)
            else:
                ax.axis("off")
    return fig


_OUTLINE_COLORS = ("tab:orange", "tab:cyan", "tab:green", "tab:red", "tab:purple")


def _grid_outline(grid, height: int, width: int):
    """Pixel (x, y) of the border of a normalized (H, W, 2) grid (align_corners=False),
    once around: where a transformer's output reads the input."""
    import torch

    grid = torch.as_tensor(grid).detach().double().cpu()
    border = torch.cat([grid[0, :], grid[1:, -1], grid[-1, :-1].flip(0), grid[:-1, 0].flip(0)])
    return (((border[:, 0] + 1) * width - 1) / 2).numpy(), \
        (((border[:, 1] + 1) * height - 1) / 2).numpy()


def rectification_figure(inputs, outputs, size: float = 1.1, grids=None):
    """Distorted inputs (first row) and what each spatial transformer makes of them.

    ``inputs``: (n, 1, S, S); ``outputs``: dict name -> (n, 1, H, W), one row each.
    ``grids``: optional dict name -> (n, H, W, 2), the normalized sampling grids
    (``align_corners=False``) of some of those rows: the border of each is drawn on the
    inputs, in the colour of its row's name, to show where that transformer looks.
    """
    rows = [("input", inputs), *outputs.items()]
    grids = dict(grids or {})
    if unknown := set(grids) - set(outputs):
        raise ValueError(f"grids: {sorted(unknown)} are not rows of outputs {list(outputs)}")
    n = len(inputs)
    fig = _figure(size * n + 0.8, size * len(rows))
    axes = fig.subplots(len(rows), n, squeeze=False)
    for (name, images), row in zip(rows, axes, strict=True):
        if len(images) != n:
            raise ValueError(f"outputs[{name!r}]: expected {n} images (one per input), "
                             f"got {len(images)}")
        for j, ax in enumerate(row):
            _gray(ax, images[j])
        row[0].set_ylabel(name, fontsize=9)
    height, width = inputs.shape[-2:]
    for k, (name, grid) in enumerate(grids.items()):
        if len(grid) != n:
            raise ValueError(f"grids[{name!r}]: expected {n} grids (one per input), "
                             f"got {len(grid)}")
        color = _OUTLINE_COLORS[k % len(_OUTLINE_COLORS)]
        for j, ax in enumerate(axes[0]):
            ax.plot(*_grid_outline(grid[j], height, width), color=color, lw=0.9)
            ax.set_xlim(-0.5, width - 0.5)
            ax.set_ylim(height - 0.5, -0.5)
        axes[1 + list(outputs).index(name), 0].yaxis.label.set_color(color)
    return fig


def table1_figure(results, columns=("R", "RTS", "P", "E", "TC")):
    """Bars of our % test error beside the paper's, for every measured cell.

    ``results``: the dict of ``results/table1.json`` (``{"cells": {cell: record}}``).
    Cells not run yet are left out; the title says how many there are.
    """
    import numpy as np

    done = [(c, r) for c, r in results["cells"].items() if r.get("status") == "done"]
    fig = _figure(min(11.0, max(4.0, 0.3 * len(done) + 1.5)), 3.2)
    ax = fig.subplots()
    x = np.arange(len(done))
    ax.bar(x - 0.2, [r["error_pct"] for _, r in done], 0.4, label="ours", color="tab:blue")
    ax.bar(x + 0.2, [r["paper_error_pct"] for _, r in done], 0.4, label="paper",
           color="tab:gray")
    ax.set_xticks(x, [c for c, _ in done], rotation=70, ha="right", fontsize=6)
    ax.set_ylabel("% test error")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    missing = len(results["cells"]) - len(done)
    ax.set_title(f"Table 1 cells measured: {len(done)} ({missing} not run yet)", fontsize=10)
    return fig


def error_by_budget_figure(results, cells: str | None = None, size: float = 2.4):
    """% test error against epochs, one panel per cell trained more than once.

    ``results``: the dict of ``results/table1.json``; a cell's earlier runs are under
    ``"earlier"`` (see :func:`stnlib.paper.budget_history`). ``cells``: comma-separated
    patterns as in ``python -m stnlib paper --cells`` (``"stcnn-*/R,cnn/*"``; default all).
    The dashed line is the paper's error. Raises ``ValueError`` when no chosen cell was
    trained more than once.
    """
    from stnlib.paper import budget_history, select_cells

    chosen = set(select_cells(cells))
    histories = {c: budget_history(results, c) for c in results["cells"] if c in chosen}
    shown = [c for c, runs in histories.items() if len(runs) > 1]
    if not shown:
        raise ValueError("no chosen cell of these results was trained more than once")
    columns = min(4, len(shown))
    rows = -(-len(shown) // columns)
    fig = _figure(size * columns, size * rows * 0.85 + 0.3)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, cell in zip(axes, shown, strict=False):
        runs = histories[cell]
        epochs = [e for e, _, _ in runs]
        ax.plot(epochs, [err for _, _, err in runs], "o-", color="tab:blue", label="ours")
        paper_error = results["cells"][cell]["paper_error_pct"]
        ax.axhline(paper_error, color="gray", ls="--", label="paper")
        ax.set_xscale("log")
        ticks = sorted(set(epochs))
        ax.set_xticks(ticks, [str(e) for e in ticks])
        ax.minorticks_off()
        ax.set_ylim(0, max(err for _, _, err in runs) * 1.15)
        ax.set_title(cell, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes[len(shown):]:
        ax.axis("off")
    axes[0].set_ylabel("% test error", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.supxlabel("epochs (log scale)", fontsize=8)
    return fig


def error_by_sigma_figure(sweep, paper_errors=None, title: str | None = None):
    """% test error against the spread of a variant's offsets, one line per model.

    ``sweep``: ``{sigma_px: {cell or "oracle": error %}}`` (:func:`stnlib.paper.sigma_sweep`);
    ``paper_errors``: ``{label: error %}`` drawn as dashed lines (the paper's figures, at
    the spread it used, whatever that was). The error axis is logarithmic.
    """
    if not sweep:
        raise ValueError("sweep is empty: nothing to draw")
    names = sorted({name for errors in sweep.values() for name in errors},
                   key=lambda n: (n == "oracle", n))
    fig = _figure(5.6, 3.4)
    ax = fig.subplots()
    for name in names:
        points = [(sigma, errors[name]) for sigma, errors in sweep.items() if name in errors]
        label = "perfect transformer + CNN" if name == "oracle" else name
        ax.plot(*zip(*points, strict=True), "o-" if len(points) > 1 else "o", label=label,
                color="black" if name == "oracle" else None, ms=4)
    for i, (label, error) in enumerate((paper_errors or {}).items()):
        ax.axhline(error, color=f"C{7 + i % 3}", ls="--", lw=1, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("spread of the offsets, σ (px)")
    ax.set_ylabel("% test error (log scale)")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def error_by_group_figure(values, wrong, edges, xlabel: str,
                          paper_error: float | None = None, title: str | None = None):
    """% test error of the digits grouped by a per-digit quantity (how far a distortion
    moved a corner, how much ink it left on the canvas, ...), with each group's size.

    ``values``: (N,) the quantity; ``wrong``: (N,) bool, the model's mistakes; ``edges``:
    increasing group boundaries, the last may be ``float("inf")`` (each group is
    ``[a, b)``, the last includes ``b``); ``xlabel`` names the quantity and its unit.
    The left panel is the error rate per group, the right one how many of all the
    mistakes each group holds. ``paper_error`` draws the paper's overall error as a line.
    """
    import math

    import numpy as np
    import torch

    values = torch.as_tensor(values, dtype=torch.float64).cpu()
    wrong = torch.as_tensor(wrong).cpu().bool()
    if values.dim() != 1 or values.shape != wrong.shape:
        raise ValueError(f"values and wrong must be (N,) tensors of one length, got "
                         f"{tuple(values.shape)} and {tuple(wrong.shape)}")
    if values.isnan().any():
        raise ValueError(f"values holds {int(values.isnan().sum())} NaN; every digit needs a "
                         "number to be grouped")
    edges = [float(e) for e in edges]
    pairs = list(zip(edges[:-1], edges[1:], strict=True))
    if not pairs or any(b <= a for a, b in pairs):
        raise ValueError(f"edges must be at least two increasing numbers, got {edges}")
    if len(values) and (values.min() < edges[0] or values.max() > edges[-1]):
        raise ValueError(f"values run from {float(values.min()):g} to {float(values.max()):g}, "
                         f"outside the edges {edges[0]:g} to {edges[-1]:g}: widen the edges")
    group = torch.bucketize(values, torch.tensor(edges[1:-1], dtype=torch.float64), right=True)
    counts = torch.bincount(group, minlength=len(pairs)).numpy()
    errors = torch.bincount(group, weights=wrong.double(), minlength=len(pairs)).numpy()
    rate = 100 * errors / np.maximum(counts, 1)
    labels = [f"{a:g}+" if math.isinf(b) else f"{a:g}-{b:g}" for a, b in pairs]
    fig = _figure(8.0, 2.9)
    left, right = fig.subplots(1, 2)
    x = np.arange(len(labels))
    left.bar(x, rate, color="tab:red")
    for i, (r, n) in enumerate(zip(rate, counts, strict=True)):
        left.annotate(f"{n}", (i, r), ha="center", va="bottom", fontsize=7)
    overall = 100 * float(wrong.double().mean()) if len(wrong) else 0.0
    left.axhline(overall, color="tab:blue", ls=":", label=f"all digits: {overall:.2f}%")
    if paper_error is not None:
        left.axhline(paper_error, color="gray", ls="--", label=f"paper: {paper_error}%")
    left.set_ylim(0, 1.15 * max(float(rate.max()), overall, paper_error or 0.0, 1e-9))
    left.set_xticks(x, labels, fontsize=7)
    left.set_xlabel(xlabel)
    left.set_ylabel("% test error (digits per group on top)", fontsize=8)
    left.legend(fontsize=7)
    right.bar(x, 100 * errors / max(errors.sum(), 1), color="tab:gray")
    right.set_xticks(x, labels, fontsize=7)
    right.set_xlabel(xlabel)
    right.set_ylabel("% of all mistakes")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def error_draws_figure(draws, paper_errors=None, title: str | None = None):
    """% test error of trained models on several draws of their test set, a row each.

    ``draws``: ``{label: [error %, ...]}`` (``error_pct`` of
    :func:`stnlib.paper.load_draws`), the first error that of the fixed test set (ringed);
    ``paper_errors``: ``{label: error %}`` drawn as dashed lines (the paper's figures).
    Each row's bar spans its mean +-1 standard deviation.
    """
    import statistics

    if not draws:
        raise ValueError("draws is empty: pass {label: paper.load_draws(folder)[cell]"
                         "['error_pct']}")
    for label, errors in draws.items():
        if len(errors) < 1:
            raise ValueError(f"draws[{label!r}] has no errors")
    fig = _figure(7.2, 1.0 + 0.3 * len(draws))
    ax = fig.subplots()
    for row, errors in enumerate(draws.values()):
        y = len(draws) - 1 - row
        ax.plot(errors, [y] * len(errors), "o", color="C0", alpha=0.45, ms=4,
                label="a draw of the test set" if row == 0 else None)
        ax.plot(errors[:1], [y], "o", mfc="none", mec="black", ms=8,
                label="the fixed test set (the table's)" if row == 0 else None)
        if len(errors) > 1:
            mean, sd = statistics.fmean(errors), statistics.stdev(errors)
            ax.errorbar([mean], [y], xerr=[sd], fmt="|", color="C1", ms=12, capsize=3,
                        label="mean ± 1 sd" if row == 0 else None)
    for i, (label, error) in enumerate((paper_errors or {}).items()):
        ax.axvline(error, color=f"C{3 + i % 4}", ls="--", lw=1, label=f"{label}: {error}%")
    ax.set_yticks(range(len(draws)), list(draws)[::-1], fontsize=8)
    ax.set_ylim(-0.7, len(draws) - 0.3)
    ax.set_xlabel("% test error")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def remaining_turn_figure(turns, bin_degrees: float = 10.0, title: str | None = None):
    """How much of each drawn turn the transformers leave, one line per model.

    ``turns``: ``{name: {"drawn": (N,), "remaining": (N,)}}`` in degrees (what
    :func:`stnlib.paper.remaining_turn` returns). Each line is the mean remaining turn of
    the digits in one ``bin_degrees`` wide bin of the drawn angle, the band +-1 standard
    deviation; the legend gives :func:`stnlib.paper.undone_fraction`. The dashed
    diagonal is no transformer at all, the dotted zero line a perfect one.
    """
    import numpy as np
    import torch

    from stnlib.paper import undone_fraction

    if not turns:
        raise ValueError("turns is empty: pass {name: paper.remaining_turn(model, 'R')}")
    if not bin_degrees > 0:
        raise ValueError(f"bin_degrees must be > 0, got {bin_degrees!r}")
    fig = _figure(5.6, 3.4)
    ax = fig.subplots()
    limit = 0.0
    for name, result in turns.items():
        drawn = torch.as_tensor(result["drawn"], dtype=torch.float64).cpu()
        remaining = torch.as_tensor(result["remaining"], dtype=torch.float64).cpu()
        if drawn.dim() != 1 or drawn.shape != remaining.shape or len(drawn) < 2:
            raise ValueError(f"turns[{name!r}]: 'drawn' and 'remaining' must be (N,) tensors "
                             f"of one length N >= 2, got {tuple(drawn.shape)} and "
                             f"{tuple(remaining.shape)}")
        limit = max(limit, float(drawn.abs().max()))
        index = torch.floor(drawn / bin_degrees).long()
        centres, means, sds = [], [], []
        for b in index.unique().tolist():
            chosen = remaining[index == b]
            centres.append((b + 0.5) * bin_degrees)
            means.append(float(chosen.mean()))
            sds.append(float(chosen.std()) if len(chosen) > 1 else 0.0)
        centres, means, sds = map(np.asarray, (centres, means, sds))
        line, = ax.plot(centres, means, marker=".",
                        label=f"{name}: undoes {100 * undone_fraction(drawn, remaining):.0f}%")
        ax.fill_between(centres, means - sds, means + sds, color=line.get_color(), alpha=0.15)
    ends = np.array([-limit, limit])
    ax.plot(ends, ends, color="gray", ls="--", lw=1, label="no transformer")
    ax.axhline(0, color="black", ls=":", lw=1, label="perfect transformer")
    ax.set_xlabel("drawn turn (degrees)")
    ax.set_ylabel("turn left in the output (degrees)")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def warp_grids_figure(grids, every: int = 3, size: float = 2.2):
    """The lines of sampling grids, one panel each: where a regular output grid reads.

    ``grids``: dict name -> (H, W, 2) normalized (x, y) (one sample of a grid generator).
    """
    import torch

    fig = _figure(size * len(grids), size + 0.3)
    axes = fig.subplots(1, len(grids), squeeze=False)[0]
    for ax, (name, grid) in zip(axes, grids.items(), strict=True):
        g = torch.as_tensor(grid).detach().double().cpu()
        for i in range(0, g.shape[0], every):
            ax.plot(g[i, :, 0], g[i, :, 1], color="tab:blue", lw=0.8)
        for j in range(0, g.shape[1], every):
            ax.plot(g[:, j, 0], g[:, j, 1], color="tab:blue", lw=0.8)
        ax.plot([-1, 1, 1, -1, -1], [-1, -1, 1, 1, -1], color="gray", lw=0.8, ls="--")
        ax.set_xlim(-1.6, 1.6)
        ax.set_ylim(1.6, -1.6)  # y down, as in images
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(name, fontsize=9)
    return fig


# ---------------------------------------------------------------------------
# Notebook 05: training the ST-CNN (inputs vs transformed, curves, theta, rotation).
# ---------------------------------------------------------------------------


def transformed_digits_figure(inputs, warped, labels=None, n: int = 8, size: float = 1.2):
    """Two rows: the input digits and what the spatial transformer made of them.

    ``inputs (N, 1, H, W)`` and ``warped (N, 1, H_out, W_out)`` in [0, 1] (e.g. from
    ``model(x, return_transformed=True)``); the first ``n`` are drawn.
    """
    import torch

    inputs, warped = torch.as_tensor(inputs).detach(), torch.as_tensor(warped).detach()
    if inputs.dim() != 4 or warped.dim() != 4 or len(inputs) != len(warped):
        raise ValueError(f"inputs and warped: expected (N, 1, H, W) each with the same N, got "
                         f"{tuple(inputs.shape)} and {tuple(warped.shape)}")
    n = min(n, len(inputs))
    fig = _figure(size * n, size * 2.3)
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        title = None if labels is None else str(int(labels[i]))
        _gray(axes[0, i], inputs[i], title)
        _gray(axes[1, i], warped[i])
    axes[0, 0].set_ylabel("input", fontsize=9)
    axes[1, 0].set_ylabel("transformed", fontsize=9)
    return fig


def _history_dict(history) -> dict:
    return history.to_dict() if hasattr(history, "to_dict") else dict(history)


def training_curves_figure(histories):
    """Training loss and test accuracy per epoch for one or several runs.

    ``histories``: a :class:`stnlib.train.History` (or its dict), or ``{name: history}``.
    """
    if hasattr(histories, "to_dict") or "train_loss" in histories:
        histories = {"run": histories}
    fig = _figure(8.0, 3.0)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for name, history in histories.items():
        h = _history_dict(history)
        loss_ax.plot(h["epoch"], h["train_loss"], marker="o", label=name)
        tests = [(e, a) for e, a in zip(h["epoch"], h["test_acc"], strict=True) if a is not None]
        if tests:
            acc_ax.plot([e for e, _ in tests], [100 * a for _, a in tests], marker="o",
                        label=name)
    loss_ax.set(xlabel="epoch", ylabel="training loss", yscale="log")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def theta_distribution_figure(theta, bins: int = 40):
    """Histograms of the six entries of the learned ``theta (N, 2, 3)``; red = identity."""
    import torch

    theta = torch.as_tensor(theta).detach().float().cpu()
    if theta.dim() != 3 or theta.shape[1:] != (2, 3):
        raise ValueError(f"theta: expected shape (N, 2, 3), got {tuple(theta.shape)}")
    identity = [[1, 0, 0], [0, 1, 0]]
    names = [["a (x from x)", "b (x from y)", "tx"], ["c (y from x)", "d (y from y)", "ty"]]
    fig = _figure(8.0, 4.2)
    axes = fig.subplots(2, 3)
    for r in range(2):
        for c in range(3):
            ax = axes[r, c]
            ax.hist(theta[:, r, c].numpy(), bins=bins, color="tab:blue", alpha=0.8)
            ax.axvline(identity[r][c], color="tab:red", lw=1)
            ax.set_title(f"theta[{r},{c}]: {names[r][c]}", fontsize=9)
            ax.tick_params(labelsize=8)
    fig.suptitle(f"learned theta over {len(theta)} test digits", fontsize=10)
    return fig


def accuracy_vs_rotation_figure(degrees, accuracies):
    """Test accuracy against rotation angle, one line per model.

    ``degrees``: the angles; ``accuracies``: ``{name: [accuracy in [0, 1] per angle]}``
    (e.g. from :func:`stnlib.train.rotation_sweep`).
    """
    degrees = list(degrees)
    fig = _figure(5.5, 3.4)
    ax = fig.subplots()
    for name, values in accuracies.items():
        values = list(values)
        if len(values) != len(degrees):
            raise ValueError(f"accuracies[{name!r}] has {len(values)} values for "
                             f"{len(degrees)} angles")
        ax.plot(degrees, [100 * v for v in values], marker="o", label=name)
    ax.set(xlabel="rotation of the test digits (degrees)", ylabel="test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


# ---------------------------------------------------------------------------
# Notebook 00: how one model's accuracy falls off under each kind of transform.
# ---------------------------------------------------------------------------


def invariance_figure(curves, chance: float = 0.1):
    """Test accuracy of ONE model as the test digits are transformed, one panel per kind
    of transform. ``curves``: ``{x label: (x values, accuracies in [0, 1])}``, e.g.
    ``{"rotation (degrees)": (angles, accs), "scale": (scales, accs)}``; the dotted line is
    ``chance``. (For several models against rotation see :func:`accuracy_vs_rotation_figure`.)
    """
    curves = dict(curves)
    if not curves:
        raise ValueError("curves: expected at least one {label: (xs, accuracies)} entry")
    fig = _figure(3.2 * len(curves), 2.9)
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (label, (xs, accs)) in zip(axes, curves.items(), strict=True):
        xs, accs = list(xs), list(accs)
        if len(xs) != len(accs):
            raise ValueError(f"curves[{label!r}]: {len(xs)} x values but {len(accs)} accuracies")
        ax.plot(xs, [100 * a for a in accs], marker="o", color="tab:blue")
        ax.axhline(100 * chance, color="gray", ls=":", lw=1)
        ax.set(xlabel=label, ylim=(0, 102))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    return fig


# ---------------------------------------------------------------------------
# Notebook 07: the 3D spatial transformer (volumes, 3D grids, projections).
# ---------------------------------------------------------------------------


def _volume(volume):
    """One volume as a (D, H, W) float CPU tensor, from (D, H, W) or (1, D, H, W)."""
    import torch

    vol = torch.as_tensor(volume).detach().float().cpu()
    vol = vol.squeeze(0) if vol.dim() == 4 else vol
    if vol.dim() != 3:
        raise ValueError(f"volume: expected shape (D, H, W) or (1, D, H, W), got "
                         f"{tuple(torch.as_tensor(volume).shape)}")
    return vol


def grid_points_3d(grids, titles=None, every: int = 2, size: float = 3.2):
    """3D sampling grids drawn as points, one 3D panel per grid.

    ``grids``: a sequence of ``(D, H, W, 3)`` tensors (or a tensor ``(N, D, H, W, 3)``),
    e.g. ``affine_grid(theta, (N, 1, 8, 8, 8))``. Every ``every``-th point per axis is
    drawn, coloured by its output depth index, inside the [-1, 1]^3 cube of the input.
    Returns the Figure."""
    import torch

    grids = list(grids)
    titles = list(titles) if titles is not None else [None] * len(grids)
    if not grids or len(titles) != len(grids):
        raise ValueError(f"grids/titles: expected one title per grid and at least one grid, "
                         f"got {len(grids)} grids and {len(titles)} titles")
    fig = _figure(size * len(grids), size)
    for k, (grid, title) in enumerate(zip(grids, titles, strict=True)):
        g = torch.as_tensor(grid).detach().float().cpu()
        if g.dim() != 4 or g.shape[-1] != 3:
            raise ValueError(f"grids[{k}]: expected shape (D, H, W, 3), got {tuple(g.shape)}")
        g = g[::every, ::every, ::every]
        depth = torch.arange(g.shape[0]).view(-1, 1, 1).expand(g.shape[:3])
        ax = fig.add_subplot(1, len(grids), k + 1, projection="3d")
        pts = g.reshape(-1, 3).numpy()
        ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c=depth.reshape(-1).numpy(),
                   cmap="viridis", s=6, depthshade=False)
        edges = [(-1, 1)] * 3
        for a in (-1, 1):  # the input volume's cube, as a wire frame
            for b in (-1, 1):
                ax.plot(edges[0], [a, a], [b, b], color="0.6", lw=0.6)
                ax.plot([a, a], edges[1], [b, b], color="0.6", lw=0.6)
                ax.plot([a, a], [b, b], edges[2], color="0.6", lw=0.6)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_zlabel("z")
        ax.tick_params(labelsize=6)
        if title:
            ax.set_title(title, fontsize=9)
    return fig


def volume_slices(volume, n: int = 8, title: str | None = None, size: float = 1.1):
    """``n`` evenly spaced depth slices (z = const) of one volume ``(D, H, W)`` or
    ``(1, D, H, W)``, side by side, each titled with its index. Returns the Figure."""
    vol = _volume(volume)
    depth = vol.shape[0]
    n = max(1, min(int(n), depth))
    index = [round(i * (depth - 1) / max(n - 1, 1)) for i in range(n)]
    fig = _figure(size * n, size + (0.45 if title else 0.25))
    for ax, z in zip(fig.subplots(1, n, squeeze=False)[0], index, strict=True):
        _gray(ax, vol[z], f"z={z}", vmin=0.0, vmax=max(float(vol.max()), 1e-6))
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def mip_before_after(before, after, titles=None, size: float = 1.2):
    """Maximum-intensity projections of volumes before and after a transform.

    ``before`` and ``after``: ``(N, 1, D, H, W)`` (the sizes may differ, e.g. 32^3 in and
    16^3 out). One row per volume; the columns show the brightest voxel along z, y and x
    (front, top and side views) for ``before``, then for ``after``. ``titles``: one str
    per row, shown on the left (optional). Returns the Figure."""
    import torch

    before, after = torch.as_tensor(before).detach(), torch.as_tensor(after).detach()
    if before.dim() != 5 or after.dim() != 5 or len(before) != len(after):
        raise ValueError(f"before/after: expected two (N, 1, D, H, W) tensors with the same "
                         f"N, got {tuple(before.shape)} and {tuple(after.shape)}")
    n = len(before)
    titles = list(titles) if titles is not None else [None] * n
    if len(titles) != n:
        raise ValueError(f"titles: expected {n} titles (one per row), got {len(titles)}")
    views = [("front\n(max over z)", 0), ("top\n(max over y)", 1), ("side\n(max over x)", 2)]
    fig = _figure(size * 6 + 0.4, size * n + 0.7)
    axes = fig.subplots(n, 6, squeeze=False)
    for row in range(n):
        for col, (vols, name) in enumerate([(before, "input"), (after, "output")]):
            vol = _volume(vols[row])
            for k, (view, axis) in enumerate(views):
                ax = axes[row, 3 * col + k]
                _gray(ax, vol.amax(dim=axis), f"{name}: {view}" if row == 0 else None,
                      vmin=0.0, vmax=1.0)
                ax.title.set_fontsize(7)
        if titles[row]:
            axes[row, 0].set_ylabel(titles[row], fontsize=8)
    return fig

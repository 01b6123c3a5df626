"""The 3D spatial transformer and the volume classifiers of notebook 07.

Everything is the 2D story with one more axis: ``theta`` is ``(N, 3, 4)``, the grid is
``(N, D, H, W, 3)`` and the sampler interpolates trilinearly between 8 voxels instead of
4 pixels. The localization net again starts at the identity transform.

Speed on a CPU: 3D convolutions cost 8x more per halving of resolution than 2D ones, so
both classifiers look at a 16 x 16 x 16 version of the 32 x 32 x 32 input.

* :class:`CNN3d` averages each 2 x 2 x 2 block (``AvgPool3d(2)``) and classifies.
* :class:`STCNN3d` lets the spatial transformer *sample* the 16^3 output directly from
  the 32^3 input. With ``align_corners=False`` the centre of output voxel ``i`` falls
  exactly between input voxels ``2i`` and ``2i + 1``, so at the identity theta trilinear
  sampling *is* the 2 x 2 x 2 average: at initialisation ST-CNN3d and CNN3d compute the
  same function, and everything the ST-CNN gains it gains by moving theta.

Volumes enter in [0, 1] with a zero background and are normalised after the sampler.
Models record their constructor arguments in ``model.config`` so that
:func:`stnlib.load_checkpoint` can rebuild them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stnlib.localization import identity_init_
from stnlib.models import Normalize, TransformThenClassify, seeded_init
from stnlib.transformer import check_sampler, geometry

__all__ = ["CNN3d", "Classifier3d", "LocalizationNet3d", "STCNN3d", "SpatialTransformer3d",
           "params_to_theta_3d"]

#: Mean and std of the posed digit volumes of :mod:`stnlib.volumes` (thickness 6 of 32).
VOLUME_MEAN, VOLUME_STD = 0.02, 0.12


def _size3(size: Sequence[int] | int, name: str) -> tuple[int, int, int]:
    """``(D, H, W)`` from an int or a sequence of three ints, with a clear error."""
    if isinstance(size, int):
        size = (size, size, size)
    try:
        out = tuple(int(s) for s in size)
    except TypeError:
        raise TypeError(f"{name} must be an int or (D, H, W), got {size!r}") from None
    if len(out) != 3 or min(out) < 1:
        raise ValueError(f"{name} must be (D, H, W) of positive ints, got {size!r}")
    return out


def _check_volume(model: nn.Module, input: torch.Tensor) -> None:
    expected = (model.in_channels, *model.input_size)
    if not isinstance(input, torch.Tensor) or input.ndim != 5 \
            or tuple(input.shape[1:]) != expected:
        got = tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__
        raise ValueError(
            f"{type(model).__name__} expects volumes (N, {', '.join(map(str, expected))}) "
            f"float in [0, 1], got {got}"
        )


#: transform name -> identity values of the localization net's outputs
TRANSFORMS_3D: dict[str, tuple[float, ...]] = {
    "affine": tuple(torch.eye(3, 4).flatten().tolist()),  # the 12 entries of theta
    "rigid": (0.0,) * 6,  # rotation vector (3) and translation (3)
}


def params_to_theta_3d(params: torch.Tensor, transform: str) -> torch.Tensor:
    """theta (N, 3, 4) from the localization net's outputs ``params (N, P)``.

    ``"affine"``: the 12 numbers are theta. ``"rigid"``: ``(r, t)``, a rotation vector
    ``r`` (axis times angle in radians) and a translation ``t``; theta =
    ``[exp(K(r)) | t]`` where ``K(r)`` is the cross-product matrix of ``r``, so theta is
    always a proper rotation: the transformer can turn and move, never squash or zoom.
    """
    if transform not in TRANSFORMS_3D:
        raise ValueError(f"transform must be one of {sorted(TRANSFORMS_3D)}, got {transform!r}")
    n = params.shape[0]
    if transform == "affine":
        return params.view(n, 3, 4)
    r, t = params[:, :3], params[:, 3:]
    zero = torch.zeros_like(r[:, 0])
    k = torch.stack([zero, -r[:, 2], r[:, 1], r[:, 2], zero, -r[:, 0],
                     -r[:, 1], r[:, 0], zero], dim=1).view(n, 3, 3)
    return torch.cat([torch.linalg.matrix_exp(k), t.unsqueeze(2)], dim=2)


def _stage(cin: int, cout: int, batch_norm: bool) -> list[nn.Module]:
    """Conv3d 3x3x3 (same size) -> [BatchNorm3d] -> ReLU -> MaxPool3d 2."""
    norm = [nn.BatchNorm3d(cout)] if batch_norm else []
    return [nn.Conv3d(cin, cout, 3, padding=1, bias=not batch_norm), *norm, nn.ReLU(True),
            nn.MaxPool3d(2)]


class LocalizationNet3d(nn.Module):
    """Look at a volume, output ``theta (N, 3, 4)``; the identity transform at initialisation.

    ``AvgPool3d(pool) -> len(channels) x (Conv3d 3x3x3, ReLU, MaxPool3d 2) -> Linear(F,
    hidden) -> ReLU -> Linear(hidden, 12)``. Orientation is a coarse property of a
    volume, so the network works at low resolution (``pool=4``: 8^3 for a 32^3 input),
    which keeps it cheap.

    Args:
        in_channels: channels C of the volumes.
        input_size: (D, H, W) of the volumes (or one int for a cube).
        channels: output channels of the conv stages.
        hidden: width of the hidden fully connected layer.
        pool: average-pooling factor applied first.
        transform: ``"affine"`` (12 free numbers) or ``"rigid"`` (rotation + translation,
            6 numbers), see :func:`params_to_theta_3d`.

    Shapes: ``forward(input (N, C, D, H, W)) -> theta (N, 3, 4)``.
    """

    def __init__(self, in_channels: int = 1, input_size: Sequence[int] | int = 32,
                 channels: Sequence[int] = (16, 32), hidden: int = 64, pool: int = 4,
                 transform: str = "affine") -> None:
        super().__init__()
        if transform not in TRANSFORMS_3D:
            raise ValueError(
                f"transform must be one of {sorted(TRANSFORMS_3D)}, got {transform!r}")
        self.transform = transform
        self.in_channels, self.input_size = int(in_channels), _size3(input_size, "input_size")
        channels = [int(c) for c in channels]
        reduce = int(pool) * 2 ** len(channels)
        if not channels or min(self.input_size) < reduce:
            raise ValueError(
                f"input_size {self.input_size} is too small for pool={pool} and "
                f"{len(channels)} conv stages: each side must be at least {reduce}"
            )
        layers: list[nn.Module] = [nn.AvgPool3d(int(pool))]
        for cin, cout in zip([in_channels, *channels[:-1]], channels, strict=True):
            layers += _stage(cin, cout, batch_norm=False)
        self.features = nn.Sequential(*layers)
        cells = 1
        for s in self.input_size:
            cells *= s // reduce
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * cells, hidden),
                                  nn.ReLU(True),
                                  nn.Linear(hidden, len(TRANSFORMS_3D[transform])))
        self.reset_identity()

    def reset_identity(self) -> None:
        """Zero the last layer's weights and set its bias to the identity theta."""
        identity_init_(self.head[-1], TRANSFORMS_3D[self.transform])

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        _check_volume(self, input)
        return params_to_theta_3d(self.head(self.features(input)), self.transform)


class SpatialTransformer3d(nn.Module):
    """Warp each volume by the ``theta (N, 3, 4)`` its localization network predicts.

    Args:
        in_channels: channels C of the input volumes.
        input_size: (D, H, W) of the input (or one int for a cube).
        output_size: (D_out, H_out, W_out) of the warped output; default ``input_size``.
        sampler: ``"stnlib"`` (from-scratch grid and sampler) or ``"torch"`` (same numbers).
        align_corners, mode, padding_mode: as in ``torch.nn.functional.grid_sample``;
            ``mode="bilinear"`` on a volume is trilinear interpolation.
        localization: a network mapping (N, C, D, H, W) to theta (N, 3, 4); default a
            :class:`LocalizationNet3d` (identity at initialisation).

    Shapes: ``forward(input (N, C, D, H, W)) -> (warped (N, C, D_out, H_out, W_out),
    theta (N, 3, 4))``.
    """

    def __init__(self, in_channels: int = 1, input_size: Sequence[int] | int = 32,
                 output_size: Sequence[int] | int | None = None, sampler: str = "stnlib",
                 align_corners: bool = False, mode: str = "bilinear",
                 padding_mode: str = "zeros", localization: nn.Module | None = None) -> None:
        super().__init__()
        check_sampler(sampler)
        self.in_channels, self.input_size = int(in_channels), _size3(input_size, "input_size")
        self.output_size = _size3(output_size if output_size is not None else input_size,
                                  "output_size")
        self.sampler, self.align_corners = sampler, bool(align_corners)
        self.mode, self.padding_mode = mode, padding_mode
        self.localization = localization or LocalizationNet3d(in_channels, self.input_size)

    def warp(self, input: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Grid generator + sampler: resample ``input`` with a given ``theta (N, 3, 4)``."""
        affine_grid, grid_sample = geometry(self.sampler)
        size = [input.shape[0], input.shape[1], *self.output_size]
        grid = affine_grid(theta, size, align_corners=self.align_corners)
        return grid_sample(input, grid, mode=self.mode, padding_mode=self.padding_mode,
                           align_corners=self.align_corners)

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_volume(self, input)
        theta = self.localization(input)
        return self.warp(input, theta), theta

    def extra_repr(self) -> str:
        return (f"sampler={self.sampler!r}, output_size={self.output_size}, "
                f"align_corners={self.align_corners}")


class Classifier3d(nn.Module):
    """Normalise -> 3 x (Conv3d 3x3x3, BatchNorm3d, ReLU, MaxPool3d 2) -> Linear -> ReLU ->
    Linear. Each side of ``input_size`` must be divisible by 8 (e.g. 16).

    Shapes: ``forward(input (N, C, D, H, W)) -> logits (N, num_classes)``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 input_size: Sequence[int] | int = 16, channels: Sequence[int] = (16, 32, 64),
                 hidden: int = 128, batch_norm: bool = True, mean: float = VOLUME_MEAN,
                 std: float = VOLUME_STD) -> None:
        super().__init__()
        self.in_channels, self.input_size = int(in_channels), _size3(input_size, "input_size")
        channels = [int(c) for c in channels]
        reduce = 2 ** len(channels)
        if not channels or any(s % reduce for s in self.input_size):
            raise ValueError(
                f"input_size must be divisible by {reduce} on every side for "
                f"{len(channels)} conv + pool stages, got {self.input_size}"
            )
        cells = 1
        for s in self.input_size:
            cells *= s // reduce
        layers: list[nn.Module] = []
        for cin, cout in zip([in_channels, *channels[:-1]], channels, strict=True):
            layers += _stage(cin, cout, batch_norm)
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * cells, hidden),
                                  nn.ReLU(True), nn.Linear(hidden, num_classes))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        _check_volume(self, input)
        return self.head(self.features(self.normalize(input)))


class CNN3d(nn.Module):
    """Baseline: ``AvgPool3d(downsample)`` then :class:`Classifier3d`.

    Args:
        in_channels, num_classes: channels of the volumes, number of logits.
        input_size: (D, H, W) of the volumes (or one int for a cube), default 32^3.
        downsample: averaging factor before the classifier (2: 32^3 -> 16^3).
        channels, hidden, batch_norm, mean, std: of the :class:`Classifier3d`.
        seed: seed of the initial weights (None: torch's global generator).

    Shapes: ``forward(input (N, C, D, H, W)) -> logits (N, num_classes)``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 input_size: Sequence[int] | int = 32, downsample: int = 2,
                 channels: Sequence[int] = (16, 32, 64), hidden: int = 128,
                 batch_norm: bool = True, mean: float = VOLUME_MEAN, std: float = VOLUME_STD,
                 seed: int | None = 0) -> None:
        super().__init__()
        self.in_channels, self.input_size = int(in_channels), _size3(input_size, "input_size")
        if any(s % downsample for s in self.input_size):
            raise ValueError(
                f"input_size {self.input_size} must be divisible by downsample={downsample}"
            )
        self.config = dict(in_channels=self.in_channels, num_classes=int(num_classes),
                           input_size=list(self.input_size), downsample=int(downsample),
                           channels=[int(c) for c in channels], hidden=int(hidden),
                           batch_norm=bool(batch_norm), mean=float(mean), std=float(std),
                           seed=seed)
        with seeded_init(seed):
            self.downsample = nn.AvgPool3d(int(downsample))
            self.classifier = Classifier3d(
                in_channels, num_classes, [s // downsample for s in self.input_size],
                channels, hidden, batch_norm, mean, std)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        _check_volume(self, input)
        return self.classifier(self.downsample(input))


class STCNN3d(TransformThenClassify):
    """3D spatial transformer (sampling the classifier's resolution) + :class:`Classifier3d`.

    ``input [0, 1] -> SpatialTransformer3d (output input_size / downsample) -> warped ->
    Classifier3d (normalises) -> logits``. At initialisation it equals :class:`CNN3d`
    with the same seed's classifier (see the module docstring).

    Args:
        in_channels, num_classes, input_size, downsample, channels, hidden, batch_norm,
            mean, std: as in :class:`CNN3d`.
        sampler: ``"stnlib"`` (from scratch) or ``"torch"``.
        transform: ``"affine"`` or ``"rigid"``, see :class:`LocalizationNet3d`.
        loc_channels, loc_hidden, loc_pool: of the :class:`LocalizationNet3d`.
        seed: seed of the initial weights.

    Shapes: ``forward(input (N, C, D, H, W)) -> logits (N, num_classes)``; with
    ``return_transformed=True``: ``(logits, warped (N, C, D/2, H/2, W/2), theta (N, 3, 4))``.
    """

    _check = _check_volume

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 input_size: Sequence[int] | int = 32, downsample: int = 2,
                 channels: Sequence[int] = (16, 32, 64), hidden: int = 128,
                 batch_norm: bool = True, mean: float = VOLUME_MEAN, std: float = VOLUME_STD,
                 sampler: str = "stnlib", transform: str = "affine",
                 loc_channels: Sequence[int] = (16, 32), loc_hidden: int = 64,
                 loc_pool: int = 4, seed: int | None = 0) -> None:
        super().__init__()
        self.in_channels, self.input_size = int(in_channels), _size3(input_size, "input_size")
        if any(s % downsample for s in self.input_size):
            raise ValueError(
                f"input_size {self.input_size} must be divisible by downsample={downsample}"
            )
        out_size = [s // downsample for s in self.input_size]
        self.config = dict(in_channels=self.in_channels, num_classes=int(num_classes),
                           input_size=list(self.input_size), downsample=int(downsample),
                           channels=[int(c) for c in channels], hidden=int(hidden),
                           batch_norm=bool(batch_norm), mean=float(mean), std=float(std),
                           sampler=sampler, transform=transform,
                           loc_channels=[int(c) for c in loc_channels],
                           loc_hidden=int(loc_hidden), loc_pool=int(loc_pool), seed=seed)
        with seeded_init(seed):
            self.classifier = Classifier3d(in_channels, num_classes, out_size, channels,
                                           hidden, batch_norm, mean, std)
            localization = LocalizationNet3d(in_channels, self.input_size, loc_channels,
                                             loc_hidden, loc_pool, transform)
            self.transformer = SpatialTransformer3d(in_channels, self.input_size, out_size,
                                                    sampler, localization=localization)


def lesson_settings(fast: bool | None = None) -> dict:
    """Dataset size and :func:`stnlib.train.fit` settings of notebook 07.

    Full mode trains each model in one to two minutes on an idle 2-core CPU; fast mode
    (``stnlib.fast_mode()``, set by ``make test``) takes a small subset and one epoch
    through the same code. Returns ``dict(n_train, n_test, max_angle, model=dict(...),
    fit=dict(...))``: ``model`` holds the :class:`STCNN3d` arguments (the :class:`CNN3d`
    uses the same ``channels``), ``fit`` those of :func:`stnlib.train.fit`.
    """
    from stnlib.fastmode import fast_mode

    fast = fast_mode() if fast is None else bool(fast)
    model = dict(channels=(8, 16, 32), transform="affine", loc_pool=4)
    if fast:
        return dict(n_train=256, n_test=128, max_angle=90.0, model=model,
                    fit=dict(epochs=1, batch_size=32, lr=3e-3, seed=0))
    return dict(n_train=6000, n_test=1000, max_angle=90.0, model=model,
                fit=dict(epochs=12, batch_size=64, lr=3e-3, seed=0))

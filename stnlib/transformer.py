"""The spatial transformer: localization network -> grid generator -> sampler.

``SpatialTransformer`` is the whole module of Jaderberg et al. (2015) in one
``forward``: it predicts ``theta (N, 2, 3)`` from the input, turns it into a sampling
grid with ``affine_grid`` and resamples the input with ``grid_sample``. Both come
from stnlib (written from scratch, ``sampler="stnlib"``) or from torch
(``sampler="torch"``, the fast path); they give the same numbers.
"""

from __future__ import annotations

import torch
from torch import nn

from stnlib.localization import LocalizationNet, check_transform

SAMPLERS = ("stnlib", "torch")


def geometry(sampler: str):
    """``(affine_grid, grid_sample)`` for ``sampler="stnlib"`` (from scratch) or ``"torch"``."""
    if check_sampler(sampler) == "stnlib":
        from stnlib.grid import affine_grid
        from stnlib.sampler import grid_sample

        return affine_grid, grid_sample
    import torch.nn.functional as F

    return F.affine_grid, F.grid_sample


def check_sampler(sampler: str) -> str:
    """``sampler`` if it is one of :data:`SAMPLERS`, else a ValueError naming the choices."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    return sampler


class SpatialTransformer(nn.Module):
    """Warp each image by the theta its own localization network predicts.

    Args:
        in_channels: channels C of the input.
        input_size: (H, W) of the input.
        output_size: (H_out, W_out) of the warped output; defaults to ``input_size``.
        sampler: ``"stnlib"`` (from-scratch grid + sampler) or ``"torch"``.
        transform: family of warps, see :mod:`stnlib.localization`.
        align_corners: as in ``torch.nn.functional.affine_grid`` (False everywhere here).
        mode: ``"bilinear"`` or ``"nearest"`` (bilinear is what makes theta learnable).
        padding_mode: ``"zeros"`` (outside the image is background), ``"border"``, ...
        localization: a custom network mapping (N, C, H, W) to theta (N, 2, 3);
            default :class:`~stnlib.localization.LocalizationNet` (identity at init).

    Shapes: ``forward(input (N, C, H, W)) -> (warped (N, C, H_out, W_out), theta (N, 2, 3))``.
    Inputs are images in [0, 1] with a zero background, so zero padding matches it.
    """

    def __init__(
        self,
        in_channels: int = 1,
        input_size: tuple[int, int] = (28, 28),
        output_size: tuple[int, int] | None = None,
        sampler: str = "stnlib",
        transform: str = "affine",
        align_corners: bool = False,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        localization: nn.Module | None = None,
    ) -> None:
        super().__init__()
        check_sampler(sampler)
        self.in_channels = int(in_channels)
        self.input_size = tuple(int(s) for s in input_size)
        self.output_size = tuple(int(s) for s in (output_size or input_size))
        self.sampler, self.transform = sampler, check_transform(transform)
        self.align_corners, self.mode, self.padding_mode = bool(align_corners), mode, padding_mode
        self.localization = localization or LocalizationNet(in_channels, input_size, transform)

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if input.ndim != 4 or tuple(input.shape[1:]) != (self.in_channels, *self.input_size):
            raise ValueError(
                f"SpatialTransformer expects input (N, {self.in_channels}, "
                f"{self.input_size[0]}, {self.input_size[1]}) float in [0, 1], got "
                f"{tuple(input.shape)}"
            )
        theta = self.localization(input)
        affine_grid, grid_sample = geometry(self.sampler)
        size = [input.shape[0], input.shape[1], *self.output_size]
        grid = affine_grid(theta, size, align_corners=self.align_corners)
        warped = grid_sample(input, grid, mode=self.mode, padding_mode=self.padding_mode,
                             align_corners=self.align_corners)
        return warped, theta

    def extra_repr(self) -> str:
        return (f"sampler={self.sampler!r}, transform={self.transform!r}, "
                f"output_size={self.output_size}, align_corners={self.align_corners}")

"""The localization network: a small CNN that looks at the image and outputs theta.

Its last layer starts at zero weights and the bias of the identity transform, so at
initialisation every image gets ``theta = [[1, 0, 0], [0, 1, 0]]`` and the transformer
passes images through unchanged; training then moves theta only as far as it helps.

A restricted ``transform`` predicts fewer numbers and builds theta from them, which
lets a lesson compare what each family of warps can do:

==================== ======== ==================================================
``transform``        outputs  theta
==================== ======== ==================================================
``"affine"``         6        ``[[a, b, tx], [c, d, ty]]``
``"translation"``    2        ``[[1, 0, tx], [0, 1, ty]]``
``"translation_scale"`` 3     ``[[s, 0, tx], [0, s, ty]]`` (the paper's "attention")
``"rotation"``       1        ``[[cos a, -sin a, 0], [sin a, cos a, 0]]``
``"similarity"``     4        ``s * rotation(a)`` plus ``(tx, ty)``
==================== ======== ==================================================
"""

from __future__ import annotations

import torch
from torch import nn

#: transform name -> (number of outputs, their identity values)
TRANSFORMS: dict[str, tuple[float, ...]] = {
    "affine": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "translation": (0.0, 0.0),
    "translation_scale": (1.0, 0.0, 0.0),
    "rotation": (0.0,),
    "similarity": (1.0, 0.0, 0.0, 0.0),  # scale, angle, tx, ty
}


def identity_init_(layer: nn.Linear, identity: torch.Tensor | tuple[float, ...]) -> nn.Linear:
    """Start a localization net's last layer at the identity warp, in place.

    Zero weights make the output independent of the input, and the bias holds the
    identity values, so every image gets the identity warp at initialisation. The
    gradient with respect to the weights is not zero, so training moves away from it.

    Args:
        layer: the last ``nn.Linear(hidden, P)``.
        identity: the P identity values (a tensor or a tuple of floats).

    Returns:
        the same layer.
    """
    identity = torch.as_tensor(identity, dtype=layer.bias.dtype).reshape(-1)
    if identity.numel() != layer.out_features:
        raise ValueError(f"identity has {identity.numel()} values but the layer has "
                         f"{layer.out_features} outputs")
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(identity)
    return layer


def check_transform(transform: str) -> str:
    if transform not in TRANSFORMS:
        raise ValueError(
            f"transform must be one of {sorted(TRANSFORMS)}, got {transform!r}"
        )
    return transform


def params_to_theta(params: torch.Tensor, transform: str) -> torch.Tensor:
    """Build theta (N, 2, 3) from the network's outputs ``params (N, P)``."""
    check_transform(transform)
    n = params.shape[0]
    zero = params.new_zeros(n)
    one = params.new_ones(n)
    if transform == "affine":
        return params.view(n, 2, 3)
    if transform == "translation":
        tx, ty = params.unbind(1)
        rows = [one, zero, tx, zero, one, ty]
    elif transform == "translation_scale":
        s, tx, ty = params.unbind(1)
        rows = [s, zero, tx, zero, s, ty]
    elif transform == "rotation":
        (a,) = params.unbind(1)
        rows = [a.cos(), -a.sin(), zero, a.sin(), a.cos(), zero]
    else:  # similarity
        s, a, tx, ty = params.unbind(1)
        rows = [s * a.cos(), -s * a.sin(), tx, s * a.sin(), s * a.cos(), ty]
    return torch.stack(rows, dim=1).view(n, 2, 3)


def _conv_out(size: int, kernel: int, pool: int = 2) -> int:
    return (size - kernel + 1) // pool


class LocalizationNet(nn.Module):
    """The localization network of the PyTorch STN tutorial, sized to any input.

    ``Conv2d(C, 8, 7) -> MaxPool 2 -> ReLU -> Conv2d(8, 10, 5) -> MaxPool 2 -> ReLU ->
    Linear(F, hidden) -> ReLU -> Linear(hidden, P)``, where ``F`` follows from
    ``input_size`` (90 for 28 x 28) and ``P`` from ``transform`` (6 for "affine").

    Args:
        in_channels: channels C of the input images.
        input_size: (H, W) of the input images; at least 18 x 18.
        transform: which family of warps theta may express (see the module docstring).
        hidden: width of the hidden fully connected layer.

    Shapes: ``forward(input (N, C, H, W)) -> theta (N, 2, 3)``; identity at initialisation.
    """

    def __init__(self, in_channels: int = 1, input_size: tuple[int, int] = (28, 28),
                 transform: str = "affine", hidden: int = 32) -> None:
        super().__init__()
        self.transform = check_transform(transform)
        self.in_channels, self.input_size = int(in_channels), tuple(int(s) for s in input_size)
        height, width = (_conv_out(_conv_out(s, 7), 5) for s in self.input_size)
        if len(self.input_size) != 2 or height < 1 or width < 1:
            raise ValueError(
                f"input_size must be (H, W) with H, W >= 18 for the localization network's "
                f"two conv + pool stages, got {input_size}"
            )
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, kernel_size=7), nn.MaxPool2d(2), nn.ReLU(True),
            nn.Conv2d(8, 10, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(True),
        )
        identity = torch.tensor(TRANSFORMS[transform])
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(10 * height * width, hidden), nn.ReLU(True),
            nn.Linear(hidden, identity.numel()),
        )
        self.reset_identity()

    def reset_identity(self) -> None:
        """Zero the last layer's weights and set its bias to the identity transform."""
        identity_init_(self.head[-1], TRANSFORMS[self.transform])

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.ndim != 4 or tuple(input.shape[1:]) != (self.in_channels, *self.input_size):
            raise ValueError(
                f"LocalizationNet expects input (N, {self.in_channels}, "
                f"{self.input_size[0]}, {self.input_size[1]}), got {tuple(input.shape)}"
            )
        return params_to_theta(self.head(self.features(input)), self.transform)

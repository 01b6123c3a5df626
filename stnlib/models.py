"""The classifiers of the course: a plain ``CNN`` and ``STCNN`` = spatial transformer + CNN.

Images enter every model in [0, 1] with a zero background, and each model normalises
*inside*, after the spatial transformer. Normalising before the sampler (as the PyTorch
tutorial does) makes the sampler's zero padding darker than the background (0 maps to
-0.42), so shrinking the digit paints a visible frame the classifier can exploit and the
transformer learns to zoom out instead of to crop (pytorch/tutorials#1117).

Why this classifier: the tutorial's network (10 and 20 channels, dropout, SGD at lr 0.01,
20 epochs) ends near 98.9%. A little wider (16 and 32 channels, 5 x 5 kernels, max-pool)
with batch normalisation, trained with Adam and a one-cycle schedule on batches of 256
and a light random-similarity augmentation (:func:`stnlib.train.training_settings`),
reaches 99.5-99.6% in 8 epochs. It stays cheap for a laptop CPU: about 1.1 M
multiply-adds per digit, twice the tutorial's classifier, and in-memory batches make the
whole run several times faster than the tutorial's DataLoader pipeline
(``python -m stnlib bench train``).

Every model records its constructor arguments in ``model.config`` (plain JSON values),
which is what a checkpoint stores to rebuild it (:mod:`stnlib.checkpoint`). Models
take a ``seed`` and draw their initial weights from it without touching torch's global
random state.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from stnlib.transformer import SpatialTransformer, check_sampler

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@contextlib.contextmanager
def seeded_init(seed: int | None):
    """Build layers inside this block to draw their initial weights from ``seed``.

    torch's global generator is forked and restored, so the caller's random state is
    untouched; ``seed=None`` draws from (and advances) the global generator instead.
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


class Normalize(nn.Module):
    """``(input - mean) / std`` with fixed statistics (MNIST's by default)."""

    def __init__(self, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> None:
        super().__init__()
        self.mean, self.std = float(mean), float(std)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return (input - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


def _check_input(model: nn.Module, input: torch.Tensor) -> None:
    expected = (model.in_channels, *model.input_size)
    if input.ndim != 4 or tuple(input.shape[1:]) != expected:
        raise ValueError(
            f"{type(model).__name__} expects input (N, {', '.join(map(str, expected))}) float "
            f"in [0, 1], got {tuple(input.shape)}"
        )


class CNN(nn.Module):
    """Baseline classifier: normalise -> 2 x (conv 5x5, max-pool 2, batch norm, ReLU) -> MLP.

    Args:
        in_channels, input_size: shape (C, H, W) of the input images (H, W >= 12).
        num_classes: number of logits.
        channels: output channels of the two conv stages.
        hidden: width of the hidden fully connected layer.
        batch_norm: use batch normalisation after each conv (faster, steadier training).
        mean, std: normalisation applied first (the input is in [0, 1]).
        seed: seed of the initial weights (None: torch's global generator).

    Shapes: ``forward(input (N, C, H, W)) -> logits (N, num_classes)``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 input_size: tuple[int, int] = (28, 28), channels: tuple[int, int] = (16, 32),
                 hidden: int = 128, batch_norm: bool = True, mean: float = MNIST_MEAN,
                 std: float = MNIST_STD, seed: int | None = 0) -> None:
        super().__init__()
        self.in_channels, self.input_size = int(in_channels), tuple(int(s) for s in input_size)
        c1, c2 = (int(c) for c in channels)
        self.config = dict(in_channels=self.in_channels, num_classes=int(num_classes),
                           input_size=list(self.input_size), channels=[c1, c2],
                           hidden=int(hidden), batch_norm=bool(batch_norm), mean=float(mean),
                           std=float(std), seed=seed)
        height, width = (((s - 4) // 2 - 4) // 2 for s in self.input_size)
        if height < 1 or width < 1:
            raise ValueError(f"input_size must be at least (16, 16) for the two 5x5 conv + 2x2 "
                             f"pool stages, got {input_size}")

        def stage(cin: int, cout: int) -> list[nn.Module]:
            # pooling first: max-pool commutes with ReLU, and normalising a quarter of the
            # pixels is cheaper; BN statistics are those of the pooled features.
            norm = [nn.BatchNorm2d(cout)] if batch_norm else []
            return [nn.Conv2d(cin, cout, 5, bias=not batch_norm), nn.MaxPool2d(2), *norm,
                    nn.ReLU(True)]

        with seeded_init(seed):
            self.normalize = Normalize(mean, std)
            self.features = nn.Sequential(*stage(in_channels, c1), *stage(c1, c2))
            self.head = nn.Sequential(
                nn.Flatten(), nn.Linear(c2 * height * width, hidden), nn.ReLU(True),
                nn.Linear(hidden, num_classes),
            )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        _check_input(self, input)
        return self.head(self.features(self.normalize(input)))


class TransformThenClassify(nn.Module):
    """What :class:`STCNN` and :class:`~stnlib.models3d.STCNN3d` share: ``self.transformer``
    warps the input, ``self.classifier`` reads the warped image.

    A subclass builds ``transformer``, ``classifier`` and ``config`` in ``__init__``.
    ``_check(input)`` refuses a wrong input shape with a ValueError: images
    ``(N, C, H, W)`` here, volumes in :class:`~stnlib.models3d.STCNN3d`. ``sampler``
    switches the transformer between the from-scratch and the torch sampler.
    """

    _check = _check_input  # a plain function here, so a method: self._check(input)

    @property
    def sampler(self) -> str:
        return self.transformer.sampler

    @sampler.setter
    def sampler(self, value: str) -> None:
        """Switch between the from-scratch and the torch sampler (same weights, same math)."""
        check_sampler(value)
        self.transformer.sampler = value
        self.config["sampler"] = value

    def forward(self, input: torch.Tensor, return_transformed: bool = False):
        """``input`` -> logits, or ``(logits, warped, theta)`` with ``return_transformed``."""
        self._check(input)
        warped, theta = self.transformer(input)
        logits = self.classifier(warped)
        return (logits, warped, theta) if return_transformed else logits


class STCNN(TransformThenClassify):
    """Spatial transformer followed by the :class:`CNN` classifier.

    ``input [0, 1] -> SpatialTransformer -> warped [0, 1] -> CNN (normalises) -> logits``.

    Args:
        in_channels, num_classes, input_size, channels, hidden, batch_norm, mean, std:
            as in :class:`CNN` (the classifier sees the warped images).
        sampler: ``"stnlib"`` (from scratch) or ``"torch"``, see :class:`SpatialTransformer`.
        transform: family of warps the localization network may predict.
        output_size: size of the warped image (default: ``input_size``).
        align_corners: grid convention (False everywhere in the course).
        seed: seed of the initial weights (the localization net starts at identity).

    Shapes: ``forward(input (N, C, H, W)) -> logits (N, num_classes)``; with
    ``return_transformed=True`` it returns ``(logits, warped (N, C, H_out, W_out), theta
    (N, 2, 3))``. ``model.transformer(input)`` gives ``(warped, theta)`` alone.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 input_size: tuple[int, int] = (28, 28), channels: tuple[int, int] = (16, 32),
                 hidden: int = 128, batch_norm: bool = True, mean: float = MNIST_MEAN,
                 std: float = MNIST_STD, sampler: str = "stnlib", transform: str = "affine",
                 output_size: tuple[int, int] | None = None, align_corners: bool = False,
                 seed: int | None = 0) -> None:
        super().__init__()
        self.in_channels, self.input_size = int(in_channels), tuple(int(s) for s in input_size)
        out_size = tuple(int(s) for s in (output_size or input_size))
        with seeded_init(seed):
            self.transformer = SpatialTransformer(in_channels, self.input_size, out_size,
                                                  sampler=sampler, transform=transform,
                                                  align_corners=align_corners)
            self.classifier = CNN(in_channels, num_classes, out_size, channels, hidden,
                                  batch_norm, mean, std, seed=None)
        self.config = dict(self.classifier.config, input_size=list(self.input_size),
                           sampler=sampler, transform=transform,
                           output_size=list(out_size), align_corners=bool(align_corners),
                           seed=seed)


#: Names the CLI and :func:`build_model` accept.
MODELS: dict[str, type[nn.Module]] = {"cnn": CNN, "stcnn": STCNN}


def build_model(name: str, **kwargs) -> nn.Module:
    """``build_model("stcnn", sampler="torch", seed=1)``: a model of :data:`MODELS` by name."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    if name == "cnn":
        kwargs = {k: v for k, v in kwargs.items()
                  if k not in ("sampler", "transform", "output_size", "align_corners")}
    return MODELS[name](**kwargs)

"""Rotated digit volumes: a small 3D dataset for the 3D spatial transformer (notebook 07).

Each MNIST digit becomes a 32 x 32 x 32 volume: the 28 x 28 image is padded to 32 x 32,
laid in the x-y plane (width and height) and given a thickness along z (depth), like a
cookie cut out of a slab. That *canonical* volume is then put in a random 3D **pose**: a
rotation about a random axis through the centre by up to ``max_angle`` degrees, then a
shift of up to ``max_shift`` (normalized units, 1.0 = half the volume) along each axis.

The pose is applied with the same two functions a spatial transformer uses,
:func:`stnlib.affine_grid` (5-D size, ``theta (N, 3, 4)``) and :func:`stnlib.grid_sample`
(trilinear). Because ``theta`` maps *output* coordinates to *input* coordinates, putting
a volume in pose ``P`` (a 4 x 4 matrix mapping canonical to posed coordinates) samples
with ``theta = P^-1``; a spatial transformer that *undoes* the pose must predict
``theta = P`` (its output is the canonical volume, its input the posed one).

Everything is deterministic by ``seed`` and uses no global random state. Volumes are
stored as uint8 (32 KiB each); :class:`stnlib.data.ImageSet` turns batches into float32
in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from stnlib import affine
from stnlib.data import ImageSet, load_mnist

__all__ = [
    "VOLUME_SIZE",
    "digit_volumes",
    "extrude",
    "pose_volumes",
    "random_poses",
    "rotation_spread",
]

#: Edge length of the volumes (D = H = W).
VOLUME_SIZE = 32


def extrude(digits: torch.Tensor, size: int = VOLUME_SIZE, thickness: int = 6) -> torch.Tensor:
    """Give 2D images a thickness: ``digits (N, H, W)`` or ``(N, 1, H, W)`` -> ``(N, 1, S, S, S)``.

    The image is zero-padded (centred) to ``size x size`` in the x-y plane and repeated on
    the ``thickness`` central z-slices; every other slice is zero. uint8 input is scaled
    to [0, 1]; float input is kept as it is (expected in [0, 1]).
    """
    if not isinstance(digits, torch.Tensor):
        raise TypeError(f"digits must be a torch.Tensor, got {type(digits).__name__}")
    if digits.ndim == 4 and digits.shape[1] == 1:
        digits = digits[:, 0]
    if digits.ndim != 3:
        raise ValueError(
            f"digits must have shape (N, H, W) or (N, 1, H, W), got {tuple(digits.shape)}"
        )
    height, width = digits.shape[-2:]
    if height > size or width > size:
        raise ValueError(f"size={size} is smaller than the images ({height} x {width})")
    if not 1 <= thickness <= size:
        raise ValueError(f"thickness must be in 1..{size}, got {thickness}")
    images = digits.float() / 255 if digits.dtype == torch.uint8 else digits.float()
    top, left = (size - height) // 2, (size - width) // 2
    images = F.pad(images, (left, size - width - left, top, size - height - top))
    slab = torch.zeros(size, dtype=images.dtype, device=images.device)
    start = (size - thickness) // 2
    slab[start:start + thickness] = 1.0
    return images[:, None, None, :, :] * slab[None, None, :, None, None]


def random_poses(n: int, generator: torch.Generator, max_angle: float = 90.0,
                 max_shift: float = 0.125) -> torch.Tensor:
    """``n`` random poses ``P (n, 4, 4)``: rotate, then shift.

    The rotation axis is uniform on the sphere, the angle uniform in
    ``[-max_angle, max_angle]`` degrees, and each shift component uniform in
    ``[-max_shift, max_shift]`` (normalized coordinates). Draws only from ``generator``.
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator, got {type(generator).__name__}: "
            "use torch.Generator().manual_seed(seed)"
        )
    if n < 1:
        raise ValueError(f"n must be a positive int, got {n}")
    axis = torch.randn(n, 3, generator=generator)
    axis = torch.where(axis.norm(dim=1, keepdim=True) > 1e-6, axis, torch.tensor([0.0, 0, 1]))
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_angle)
    shift = (torch.rand(n, 3, generator=generator) * 2 - 1) * max_shift
    rotation = affine.rotation_axis_angle(axis, angle)
    return affine.compose(rotation, affine.translation_3d(*shift.unbind(1)))


def pose_volumes(volumes: torch.Tensor, poses: torch.Tensor, sampler: str = "stnlib",
                 chunk: int = 256) -> torch.Tensor:
    """Put canonical ``volumes (N, C, D, H, W)`` in ``poses (N, 4, 4)``: returns the posed
    volumes, same shape, by trilinear sampling with ``theta = to_theta(P^-1)`` (zero padding).

    ``sampler="torch"`` uses torch's ``affine_grid`` / ``grid_sample`` instead of stnlib's
    (same numbers). Works through the batch ``chunk`` volumes at a time to bound memory.
    """
    from stnlib.transformer import geometry

    if volumes.ndim != 5:
        raise ValueError(f"volumes must have shape (N, C, D, H, W), got {tuple(volumes.shape)}")
    if poses.ndim != 3 or tuple(poses.shape[1:]) != (4, 4) or poses.shape[0] != len(volumes):
        raise ValueError(
            f"poses must have shape ({len(volumes)}, 4, 4) (one 4x4 pose per volume), "
            f"got {tuple(poses.shape)}"
        )
    grid_fn, sample_fn = geometry(sampler)
    theta = affine.to_theta(affine.invert(poses.to(volumes.dtype)))
    out = []
    for start in range(0, len(volumes), chunk):
        part, t = volumes[start:start + chunk], theta[start:start + chunk]
        grid = grid_fn(t, list(part.shape), align_corners=False)
        out.append(sample_fn(part, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False))
    return torch.cat(out) if out else volumes.clone()


def digit_volumes(n: int, train: bool = True, seed: int = 0, max_angle: float = 90.0,
                  max_shift: float = 0.125, thickness: int = 6, size: int = VOLUME_SIZE,
                  sampler: str = "stnlib", root: str | None = None
                  ) -> tuple[ImageSet, torch.Tensor]:
    """``n`` MNIST digits as randomly posed volumes, deterministic by ``seed``.

    Args:
        n: number of volumes (the digits are the first ``n`` of a seeded permutation of
            the MNIST split, so different seeds also pick different digits).
        train: take the digits from MNIST's training split, else from its test split.
        seed: the one source of randomness (digit choice and poses).
        max_angle, max_shift: pose range, see :func:`random_poses`.
        thickness, size: see :func:`extrude`.
        sampler: ``"stnlib"`` or ``"torch"`` for the resampling (same result).
        root: MNIST location (see :mod:`stnlib.data`).

    Returns:
        ``(ImageSet, poses)``: the set holds uint8 volumes ``(n, 1, S, S, S)`` and labels
        ``(n,)``; ``poses (n, 4, 4)`` maps canonical to posed coordinates.
    """
    images, labels = load_mnist(train=train, root=root)
    if not 1 <= n <= len(images):
        raise ValueError(f"n must be in 1..{len(images)} for this MNIST split, got {n}")
    generator = torch.Generator().manual_seed(int(seed))
    index = torch.randperm(len(images), generator=generator)[:n]
    poses = random_poses(n, generator, max_angle, max_shift)
    chunks = []
    for start in range(0, n, 256):
        part = extrude(images[index[start:start + 256]], size, thickness)
        posed = pose_volumes(part, poses[start:start + 256], sampler)
        chunks.append(posed.mul_(255).round_().clamp_(0, 255).to(torch.uint8))
    return ImageSet(torch.cat(chunks), labels[index]), poses


def rotation_spread(matrices: torch.Tensor) -> torch.Tensor:
    """How far apart a batch of rotations is: the angle in degrees ``(N,)`` between each
    matrix and their common mean rotation.

    ``matrices``: ``(N, 3, 3)``, or ``(N, 4, 4)`` / ``(N, 3, 4)`` whose top-left 3x3 block is
    used. Matrices that are only nearly rotations (a learned theta) are first replaced by
    the nearest rotation (the polar factor ``U V^T`` of their SVD); the mean rotation is
    the polar factor of their average. Poses drawn by :func:`random_poses` with
    ``max_angle=90`` have a median spread of about 40 degrees; a transformer that undoes
    them brings ``P^-1 theta`` closer together.
    """
    if matrices.ndim != 3 or matrices.shape[-2] < 3 or matrices.shape[-1] < 3:
        raise ValueError(
            f"matrices must have shape (N, 3, 3), (N, 3, 4) or (N, 4, 4), got "
            f"{tuple(matrices.shape)}"
        )
    rot = matrices[:, :3, :3].double()
    u, _, vt = torch.linalg.svd(rot)
    nearest = u @ vt
    u, _, vt = torch.linalg.svd(nearest.mean(0))
    mean = u @ vt
    cos = ((mean.T @ nearest).diagonal(dim1=1, dim2=2).sum(1) - 1) / 2
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0))).float()

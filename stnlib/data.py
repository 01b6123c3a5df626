"""MNIST for the course: found or downloaded once, then held in memory as uint8 tensors.

Where the files are looked for (first match wins):

1. the ``root`` argument of the loaders;
2. the ``STNLIB_DATA`` environment variable;
3. the course's ``data/`` folder (in a clone of the repository), or ``./data`` when
   stnlib is installed without the repository (for example on Colab).

MNIST itself lives in ``<root>/MNIST/raw/``. The md5 of the four official ``.gz``
archives there is checked and they are unpacked without touching the network, which is
how an offline user provides the data: copy the four files into that folder. Archives
that are missing are downloaded from torchvision's mirrors; every archive and unpacked
file appears under its name only once complete, so an interrupted download or unpack,
or several processes loading at once, never leave a partial file behind.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import os
import shutil
from pathlib import Path

import torch

from stnlib.checkpoint import atomic_write

ENV_VAR = "STNLIB_DATA"

#: The four official archives and the size in bytes of each once unpacked.
MNIST_FILES: dict[str, int] = {
    "train-images-idx3-ubyte.gz": 47_040_016,
    "train-labels-idx1-ubyte.gz": 60_008,
    "t10k-images-idx3-ubyte.gz": 7_840_016,
    "t10k-labels-idx1-ubyte.gz": 10_008,
}

_REPO_ROOT = Path(__file__).resolve().parent.parent


class MNISTNotFoundError(RuntimeError):
    """MNIST is neither on disk nor downloadable; the message says where to put it."""


class MNISTCorruptError(RuntimeError):
    """An MNIST file on disk is damaged; the message names it and says how to fix it."""


def default_data_root() -> Path:
    """The course's ``data/`` folder in a clone of the repository, else ``./data``."""
    if (_REPO_ROOT / "pyproject.toml").is_file() and (_REPO_ROOT / "data").is_dir():
        return _REPO_ROOT / "data"
    return Path.cwd() / "data"


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the dataset root: ``root`` argument, then ``$STNLIB_DATA``, then the default."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return default_data_root()


def load_mnist(
    train: bool = True, root: str | os.PathLike[str] | None = None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one MNIST split into memory.

    Args:
        train: the 60,000 training digits if True, else the 10,000 test digits.
        root: dataset root (see the module docstring for the lookup order).
        download: allow torchvision to download missing files.

    Returns:
        ``images`` uint8 of shape (N, 28, 28) and ``labels`` int64 of shape (N,).
        The tensors are cached per (root, split) and shared: do not modify them in place.

    Raises:
        MNISTNotFoundError: the files are missing and could not be downloaded.
        MNISTCorruptError: a file on disk is truncated or does not match its md5.
    """
    return _load_cached(data_root(root).resolve(), bool(train), bool(download))


@functools.lru_cache(maxsize=4)
def _load_cached(root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import MNIST  # imported here: torchvision is slow to import

    raw = root / "MNIST" / "raw"
    _unpack_archives(raw)
    log = io.StringIO()  # torchvision prints progress; the library prints nothing
    try:
        with contextlib.redirect_stdout(log):
            if download:
                _download_archives(raw)
                _unpack_archives(raw)
            dataset = MNIST(str(root), train=train, download=download)
    except RuntimeError as error:
        raise _explain_failure(raw, error) from error
    images, labels = dataset.data, dataset.targets
    if images.dtype != torch.uint8 or images.shape[1:] != (28, 28):
        raise MNISTCorruptError(
            f"MNIST in {raw} decoded to images of dtype {images.dtype} and shape "
            f"{tuple(images.shape)}, expected uint8 (N, 28, 28): delete {raw} and provide "
            "the four official files again"
        )
    return images, labels.long()


def _unpack_archives(raw: Path) -> None:
    """Unpack each official archive in ``raw`` whose unpacked file is missing or the wrong size.

    torchvision unpacks straight into the final file name, so a second process loading
    MNIST at the same time (two training runs started together) can read a half-written
    file, and an interrupted unpack leaves a truncated one behind. Here each archive that
    passes its md5 check is unpacked into a temporary file beside the target and renamed
    onto it in one step (:func:`stnlib.checkpoint.atomic_write`): the target is either
    absent or complete, never partial, and a truncated leftover is replaced. A missing
    target without an intact archive is left to :func:`_download_archives` (or the errors
    of :func:`load_mnist`); a truncated one without it is a :class:`MNISTCorruptError`
    here, before torchvision fails on it deep inside.
    """
    for archive, size in MNIST_FILES.items():
        target = raw / archive.removesuffix(".gz")
        found = target.stat().st_size if target.is_file() else None
        if found == size:
            continue
        if _intact(raw / archive):
            with gzip.open(raw / archive, "rb") as source:
                atomic_write(target, "wb", lambda file, source=source: shutil.copyfileobj(
                    source, file, 1 << 20))
        elif found is not None:
            raise MNISTCorruptError(
                f"{target} is {found} bytes, expected {size}: the file is truncated or "
                f"corrupt, and no intact {archive} is beside it to unpack it again. Delete "
                f"it and put the official {archive} into {raw} (or run once with internet "
                "to download it)."
            )


def _download_archives(raw: Path) -> None:
    """Download each official archive that ``raw`` lacks (neither intact nor unpacked).

    torchvision downloads into the final file name too, so an interrupted download, or two
    processes downloading at once, can leave a partial archive under the official name.
    Here each archive is downloaded into a file of its own beside it
    (``<archive>.part-<pid>``), checked against its md5, and only then renamed onto the
    official name; :func:`_unpack_archives` unpacks it afterwards. The mirrors are
    torchvision's (``MNIST.mirrors``), tried in order; when every one fails, a
    RuntimeError lists what each said (:func:`load_mnist` explains it) and no partial file
    is left behind.
    """
    from urllib.error import URLError

    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import download_url

    md5s = dict(MNIST.resources)
    for archive, size in MNIST_FILES.items():
        target = raw / archive.removesuffix(".gz")
        if (target.is_file() and target.stat().st_size == size) or _intact(raw / archive):
            continue
        raw.mkdir(parents=True, exist_ok=True)
        part = raw / f"{archive}.part-{os.getpid()}"
        errors = []
        try:
            for mirror in MNIST.mirrors:
                try:
                    download_url(f"{mirror}{archive}", str(raw), part.name, md5s[archive])
                except (RuntimeError, URLError, OSError) as error:  # the next mirror
                    errors.append(f"{mirror}{archive}: {error}")  # overwrites a partial part
                    continue
                os.replace(part, raw / archive)
                break
            else:
                raise RuntimeError(f"Error downloading {archive}: " + "; ".join(errors))
        finally:
            part.unlink(missing_ok=True)


def _intact(archive: Path) -> bool:
    """Whether ``archive`` (one of :data:`MNIST_FILES`) exists and passes its md5 check."""
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import check_integrity

    return check_integrity(str(archive), dict(MNIST.resources).get(archive.name))


def _explain_failure(raw: Path, error: RuntimeError) -> RuntimeError:
    bad = [name for name in MNIST_FILES if (raw / name).is_file() and not _intact(raw / name)]
    if bad:
        return MNISTCorruptError(
            f"{', '.join(str(raw / n) for n in bad)} failed the md5 check (truncated or not "
            "the official file) and could not be downloaded again. Delete it and copy the "
            f"official archive into {raw}, or run once with internet."
        )
    missing = [name for name in MNIST_FILES if not (raw / name).is_file()]
    reason = " ".join(str(error).split())
    return MNISTNotFoundError(
        f"MNIST was not found in {raw} and could not be downloaded.\n"
        f"Missing there: {', '.join(missing) or '(no archive; see the download error)'}.\n"
        f"Download error: {reason}\n"
        f"Fix: put the four official files ({', '.join(MNIST_FILES)}) into {raw}, "
        f"or point {ENV_VAR} (or the root= argument) at a folder whose MNIST/raw/ has them, "
        "or connect to the internet and run again."
    )


# --------------------------------------------------------------------------------------
# In-memory datasets and batches (no DataLoader, no worker processes, no PIL).
# --------------------------------------------------------------------------------------


class ImageSet:
    """A labelled set of images held in memory; batches are made by index slicing.

    Args:
        images: uint8 in [0, 255] or float in [0, 1], of shape (N, H, W) (one channel
            is added), (N, C, H, W), or (N, C, D, H, W) for volumes. The tensor is kept
            as given (uint8 stays uint8, four times smaller); batches convert to float32.
        labels: integer class labels of shape (N,); stored as int64.

    ``len(s)``, ``s.subset(...)`` and ``s.batches(...)`` are all a training loop needs:
    ``images (B, C, H, W)`` float32 in [0, 1] and ``labels (B,)`` int64 per batch.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
            raise TypeError(
                f"ImageSet(images, labels) needs two torch.Tensor, got "
                f"{type(images).__name__} and {type(labels).__name__}: convert with "
                "torch.as_tensor(...)"
            )
        if images.ndim == 3:
            images = images.unsqueeze(1)
        if images.ndim not in (4, 5):
            raise ValueError(
                f"images must have shape (N, H, W), (N, C, H, W) or (N, C, D, H, W), got "
                f"{tuple(images.shape)}"
            )
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise TypeError(
                f"images must be uint8 (0..255) or float (0..1), got {images.dtype}: "
                "convert with images.float() / 255"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"labels must have shape (N,) with N = {images.shape[0]} (one per image), "
                f"got {tuple(labels.shape)}"
            )
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"labels must be integer class indices, got {labels.dtype}")
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (
            f"ImageSet({len(self)} images of shape {tuple(self.images.shape[1:])}, "
            f"{self.images.dtype})"
        )

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one image: (C, H, W), or (C, D, H, W) for volumes."""
        return tuple(self.images.shape[1:])

    def float_images(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Images ``index`` as float32 in [0, 1], shape (B, C, H, W) (a copy)."""
        images = self.images if index is None else self.images[index]
        if images.dtype == torch.uint8:
            return images.float().div_(255.0)
        return images.float() if images.dtype != torch.float32 else images.clone()

    def subset(self, n_or_indices: int | torch.Tensor | list[int], seed: int | None = None
               ) -> ImageSet:
        """A smaller ImageSet sharing nothing mutable with this one.

        Args:
            n_or_indices: an int ``n`` (the first ``n`` images, or ``n`` drawn without
                replacement when ``seed`` is given), or a sequence / tensor of indices.
            seed: draw the ``n`` images at random with this seed (ignored for indices).
        """
        if isinstance(n_or_indices, bool):
            raise TypeError("subset(n_or_indices) got a bool; pass an int or indices")
        if isinstance(n_or_indices, int):
            n = n_or_indices
            if not 0 < n <= len(self):
                raise ValueError(f"subset(n) needs 0 < n <= {len(self)}, got n={n}")
            if seed is None:
                index = torch.arange(n)
            else:
                gen = torch.Generator().manual_seed(int(seed))
                index = torch.randperm(len(self), generator=gen)[:n]
        else:
            index = torch.as_tensor(n_or_indices, dtype=torch.long)
            if index.ndim != 1:
                raise ValueError(f"subset indices must be 1-D, got shape {tuple(index.shape)}")
        return ImageSet(self.images[index], self.labels[index])

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | int | None = None,
        drop_last: bool = False,
    ):
        """Yield ``(images (B, C, H, W) float32 in [0, 1], labels (B,) int64)``.

        Args:
            batch_size: images per batch (the last batch may be smaller unless ``drop_last``).
            shuffle: visit the images in a random order drawn from ``generator``.
            generator: a ``torch.Generator`` (advanced by the shuffle) or an int seed.
                Shuffling without one raises, so no global random state is used.
            drop_last: skip a final incomplete batch.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        n = len(self)
        if shuffle:
            if generator is None:
                raise ValueError(
                    "batches(shuffle=True) needs generator= (a torch.Generator or an int "
                    "seed): stnlib draws no randomness from global state"
                )
            if isinstance(generator, int):
                generator = torch.Generator().manual_seed(generator)
            order = torch.randperm(n, generator=generator)
        else:
            order = None
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            if order is None:
                index = slice(start, min(start + batch_size, n))
            else:
                index = order[start:start + batch_size]
            yield self.float_images(index), self.labels[index]


def mnist(train: bool = True, root: str | os.PathLike[str] | None = None) -> ImageSet:
    """MNIST as an :class:`ImageSet`: images uint8 (N, 1, 28, 28), labels int64 (N,).

    ``train=True`` gives the 60,000 training digits, else the 10,000 test digits. The
    files are found as described in the module docstring (see :func:`load_mnist`).
    """
    images, labels = load_mnist(train=train, root=root)
    return ImageSet(images, labels)


# --------------------------------------------------------------------------------------
# Robustness variants: the same digits rotated / scaled / shifted, deterministic by seed.
# --------------------------------------------------------------------------------------

Range = float | tuple[float, float]


def similarity_theta(
    degrees: torch.Tensor | float = 0.0,
    scale: torch.Tensor | float = 1.0,
    translate_x: torch.Tensor | float = 0.0,
    translate_y: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """theta (N, 2, 3) that rotates, scales and shifts image content.

    The content is turned ``degrees`` counter-clockwise as ``imshow`` shows it, scaled
    by ``scale`` (> 1 enlarges the digit), then moved by ``translate_x`` / ``translate_y``
    in normalised units (1.0 = half the image width; +y is down). Because theta maps
    *output* coordinates to *source* coordinates (torch's convention), it is the
    inverse of that forward motion: ``theta = [R^T / s | -R^T t / s]``. Arguments are
    floats or tensors of shape (N,); the result is float32.
    """
    args = [torch.as_tensor(a, dtype=torch.float32) for a in (degrees, scale, translate_x,
                                                              translate_y)]
    angle, s, tx, ty = torch.broadcast_tensors(*[a.reshape(-1) for a in args])
    if (s <= 0).any():
        raise ValueError(f"scale must be > 0, got {s.min().item()}")
    rad = torch.deg2rad(angle)
    c, n = torch.cos(rad), torch.sin(rad)
    # forward motion in (x right, y down) coordinates, counter-clockwise on screen:
    # x' = s * [[c, n], [-n, c]] x + t ; theta is its inverse.
    inv = torch.stack([torch.stack([c, -n], -1), torch.stack([n, c], -1)], -2) / s[:, None, None]
    shift = -(inv @ torch.stack([tx, ty], -1)[..., None])
    return torch.cat([inv, shift], dim=-1)


def warp(
    images: torch.Tensor,
    theta: torch.Tensor,
    sampler: str = "stnlib",
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Resample ``images (N, C, H, W)`` with ``theta (N, 2, 3)``; returns float32 in [0, 1].

    uint8 images are converted to [0, 1] first; outside the image is 0 (the background),
    bilinear interpolation, ``align_corners=False``.
    """
    if images.dtype == torch.uint8:
        images = images.float().div(255.0)
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W) or (N, H, W), got {tuple(images.shape)}")
    theta = theta.to(images.device, images.dtype)  # drawn on the CPU, applied where images are
    if theta.shape[0] == 1 and images.shape[0] != 1:
        theta = theta.expand(images.shape[0], 2, 3)
    from stnlib.transformer import geometry  # lazily: data does not need the models

    affine_grid, grid_sample = geometry(sampler)
    grid = affine_grid(theta, list(images.shape), align_corners=False)
    out = grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode,
                      align_corners=False)
    return out.clamp_(0.0, 1.0)


def _draw(value: Range, n: int, generator: torch.Generator, name: str) -> torch.Tensor:
    """A fixed value (float) or n uniform draws from a (low, high) range."""
    if isinstance(value, (int, float)):
        return torch.full((n,), float(value))
    if isinstance(value, (tuple, list)) and len(value) == 2:
        low, high = float(value[0]), float(value[1])
        if low > high:
            raise ValueError(f"{name}=({low}, {high}): low must not exceed high")
        return low + (high - low) * torch.rand(n, generator=generator)
    raise TypeError(f"{name} must be a number or a (low, high) pair, got {value!r}")


def random_similarity_theta(
    n: int,
    degrees: Range = 0.0,
    scale: Range = 1.0,
    translate_x: Range = 0.0,
    translate_y: Range = 0.0,
    generator: torch.Generator | int | None = None,
) -> torch.Tensor:
    """theta (n, 2, 3) from :func:`similarity_theta` with each parameter fixed or drawn.

    Each parameter is a number (the same for all n) or a ``(low, high)`` pair (uniform,
    drawn per image from ``generator``, a ``torch.Generator`` or int seed; default seed 0).
    """
    if generator is None or isinstance(generator, int):
        generator = torch.Generator().manual_seed(int(generator or 0))
    return similarity_theta(
        _draw(degrees, n, generator, "degrees"),
        _draw(scale, n, generator, "scale"),
        _draw(translate_x, n, generator, "translate_x"),
        _draw(translate_y, n, generator, "translate_y"),
    )


def rotate(images: torch.Tensor, degrees: float, sampler: str = "stnlib") -> torch.Tensor:
    """``images (N, C, H, W)`` or (N, H, W) rotated ``degrees`` counter-clockwise, float [0, 1]."""
    return warp(images, similarity_theta(degrees), sampler=sampler)


def transformed(
    image_set: ImageSet,
    degrees: Range = 0.0,
    scale: Range = 1.0,
    translate_x: Range = 0.0,
    translate_y: Range = 0.0,
    seed: int = 0,
    sampler: str = "stnlib",
    batch_size: int = 2000,
) -> ImageSet:
    """A rotated / scaled / shifted copy of ``image_set`` (float32 images in [0, 1]).

    Each parameter is a number (every image gets it: ``degrees=45``) or a ``(low,
    high)`` range drawn per image with ``seed`` (``degrees=(-45, 45)``). Same arguments,
    same images. Works on 2D sets (N, C, H, W) only.
    """
    if len(image_set.image_shape) != 3:
        raise ValueError(f"transformed() needs 2D images (C, H, W), got {image_set.image_shape}")
    theta = random_similarity_theta(len(image_set), degrees, scale, translate_x, translate_y,
                                    generator=seed)
    chunks = [
        warp(image_set.float_images(slice(i, i + batch_size)), theta[i:i + batch_size], sampler)
        for i in range(0, len(image_set), batch_size)
    ]
    return ImageSet(torch.cat(chunks), image_set.labels.clone())


def mnist_transformed(
    train: bool = False,
    degrees: Range = 0.0,
    scale: Range = 1.0,
    translate_x: Range = 0.0,
    translate_y: Range = 0.0,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    sampler: str = "stnlib",
) -> ImageSet:
    """MNIST (test split by default) rotated / scaled / shifted; see :func:`transformed`."""
    return transformed(mnist(train, root), degrees, scale, translate_x, translate_y,
                       seed=seed, sampler=sampler)


class RandomAffine:
    """A ``train_transform`` for :func:`stnlib.train.fit`: fresh random similarity per batch.

    ``RandomAffine(degrees=(-10, 10), scale=(0.9, 1.1))(images, generator)`` warps a
    float batch ``(B, C, H, W)`` with parameters drawn from ``generator``; arguments as
    in :func:`random_similarity_theta`. Picklable and printable, so it can be recorded.
    """

    def __init__(self, degrees: Range = 0.0, scale: Range = 1.0, translate_x: Range = 0.0,
                 translate_y: Range = 0.0, sampler: str = "stnlib") -> None:
        self.degrees, self.scale = degrees, scale
        self.translate_x, self.translate_y = translate_x, translate_y
        self.sampler = sampler

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        theta = random_similarity_theta(images.shape[0], self.degrees, self.scale,
                                        self.translate_x, self.translate_y, generator)
        return warp(images, theta, sampler=self.sampler)

    def __repr__(self) -> str:
        return (f"RandomAffine(degrees={self.degrees}, scale={self.scale}, "
                f"translate_x={self.translate_x}, translate_y={self.translate_y})")

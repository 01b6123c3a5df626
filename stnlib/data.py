"""MNIST for the course: found or downloaded once, then held in memory as uint8 tensors.

Where the files are looked for (first match wins):

1. the ``root`` argument of the loaders;
2. the ``STNLIB_DATA`` environment variable;
3. the course's ``data/`` folder (in a clone of the repository), or ``./data`` when
   stnlib is installed without the repository (for example on Colab).

MNIST itself lives in ``<root>/MNIST/raw/``. torchvision checks the md5 of the four
official ``.gz`` archives there and unpacks them without touching the network, which
is how an offline user provides the data: copy the four files into that folder.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from pathlib import Path

import torch

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
    _check_unpacked(raw)
    log = io.StringIO()  # torchvision prints progress; the library prints nothing
    try:
        with contextlib.redirect_stdout(log):
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


def _check_unpacked(raw: Path) -> None:
    """Catch truncated unpacked files before torchvision fails on them deep inside."""
    for archive, size in MNIST_FILES.items():
        unpacked = raw / archive.removesuffix(".gz")
        if unpacked.is_file() and unpacked.stat().st_size != size:
            raise MNISTCorruptError(
                f"{unpacked} is {unpacked.stat().st_size} bytes, expected {size}: the file is "
                f"truncated or corrupt. Delete it; it is unpacked again from {archive}."
            )


def _explain_failure(raw: Path, error: RuntimeError) -> RuntimeError:
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import check_integrity

    md5 = dict(MNIST.resources)
    bad = [
        name for name in MNIST_FILES
        if (raw / name).is_file() and not check_integrity(str(raw / name), md5.get(name))
    ]
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

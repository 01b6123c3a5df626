"""Shared fixtures. Tests of stnlib's math never need MNIST; those that do use ``mnist``,
which skips (saying how to provide the files) when MNIST can be neither found nor downloaded."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from stnlib.data import MNISTNotFoundError, load_mnist


@pytest.fixture(scope="session")
def mnist_arrays():
    """(train_images, train_labels, test_images, test_labels) as loaded by stnlib.data."""
    try:
        return (*load_mnist(train=True), *load_mnist(train=False))
    except MNISTNotFoundError as error:
        pytest.skip(f"MNIST unavailable, test skipped. {error}")


@pytest.fixture(scope="session")
def mnist(mnist_arrays):
    """(train ImageSet, test ImageSet) of the full MNIST splits."""
    from stnlib.data import ImageSet

    train_images, train_labels, test_images, test_labels = mnist_arrays
    return ImageSet(train_images, train_labels), ImageSet(test_images, test_labels)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread per test: on a busy 2-core machine, OpenMP threads that wait for each
    other stall tests by orders of magnitude. Restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def benchmark_script():
    """``load(name)``: the module of ``benchmarks/<name>.py`` (a folder of scripts, not a
    package), to call its ``main(argv)`` in-process."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load

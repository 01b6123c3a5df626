"""Where MNIST is looked for, and the errors a learner gets when it is missing or damaged."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch
from torchvision.datasets import MNIST

import stnlib.data as data
from stnlib.data import MNIST_FILES, MNISTCorruptError, MNISTNotFoundError, data_root, load_mnist

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def offline(monkeypatch):
    """Make every download fail at once, as on a machine without internet."""
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])


def test_root_argument_wins_over_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STNLIB_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"


def test_environment_wins_over_default(monkeypatch, tmp_path):
    monkeypatch.setenv("STNLIB_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"


def test_default_is_the_course_data_folder(monkeypatch):
    monkeypatch.delenv("STNLIB_DATA", raising=False)
    assert data_root() == REPO / "data"


def test_empty_environment_variable_is_ignored(monkeypatch):
    monkeypatch.setenv("STNLIB_DATA", "  ")
    assert data_root() == REPO / "data"


def test_missing_files_offline_say_where_to_put_them(offline, tmp_path):
    with pytest.raises(MNISTNotFoundError) as info:
        load_mnist(root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert all(name in message for name in MNIST_FILES)
    assert "STNLIB_DATA" in message


def test_download_false_and_missing_is_a_clear_error(tmp_path):
    with pytest.raises(MNISTNotFoundError, match="could not be downloaded"):
        load_mnist(root=tmp_path, download=False)


def test_corrupt_archive_is_named(offline, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        (raw / name).write_bytes(gzip.compress(b"not mnist"))
    with pytest.raises(MNISTCorruptError, match="md5") as info:
        load_mnist(root=tmp_path)
    assert str(raw / "train-images-idx3-ubyte.gz") in str(info.value)


def test_truncated_unpacked_file_is_named(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\0" * 100)
    with pytest.raises(MNISTCorruptError, match="truncated") as info:
        load_mnist(root=tmp_path)
    assert "train-images-idx3-ubyte is 100 bytes" in str(info.value)


def test_loads_both_splits_as_uint8(mnist_arrays):
    train_images, train_labels, test_images, test_labels = mnist_arrays
    assert train_images.shape == (60_000, 28, 28) and train_images.dtype == torch.uint8
    assert test_images.shape == (10_000, 28, 28) and test_labels.dtype == torch.int64
    assert set(train_labels.unique().tolist()) == set(range(10))


def test_loading_twice_reuses_memory(mnist_arrays):
    assert load_mnist(train=False)[0] is load_mnist(train=False)[0]


def test_offline_copy_of_official_archives_is_unpacked_without_network(
    offline, tmp_path, mnist_arrays
):
    """The offline route the README describes: copy the four .gz files, nothing else."""
    source = data_root() / "MNIST" / "raw"
    if not all((source / name).is_file() for name in MNIST_FILES):
        pytest.skip(f"the official archives are not in {source}")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        (raw / name).write_bytes((source / name).read_bytes())
    images, labels = data._load_cached(tmp_path.resolve(), False, True)
    assert torch.equal(images, mnist_arrays[2]) and torch.equal(labels, mnist_arrays[3])

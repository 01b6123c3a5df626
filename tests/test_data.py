"""Where MNIST is looked for, and the errors a learner gets when it is missing or damaged."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
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
    assert "train-images-idx3-ubyte.gz" in str(info.value)


def _put_archives(root: Path, copy: bool) -> Path:
    """``root/MNIST/raw/`` holding the four official archives, copied or linked from the
    course's data folder (the test is skipped where they are not there)."""
    source = data_root() / "MNIST" / "raw"
    if not all((source / name).is_file() for name in MNIST_FILES):
        pytest.skip(f"the official archives are not in {source}")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        if copy:
            (raw / name).write_bytes((source / name).read_bytes())
        else:
            (raw / name).symlink_to((source / name).resolve())
    return raw


@pytest.fixture
def archives(tmp_path):
    """A fresh dataset root's MNIST/raw/, holding links to the four official archives."""
    return _put_archives(tmp_path, copy=False)


def test_truncated_unpacked_file_is_unpacked_again_from_its_archive(offline, archives,
                                                                     mnist_arrays):
    """What an interrupted torchvision unpack leaves behind is replaced, not an error."""
    (archives / "t10k-images-idx3-ubyte").write_bytes(b"\0" * 100)
    images, labels = data._load_cached(archives.parent.parent.resolve(), False, True)
    assert torch.equal(images, mnist_arrays[2]) and torch.equal(labels, mnist_arrays[3])
    assert (archives / "t10k-images-idx3-ubyte").stat().st_size == 7_840_016


def test_interrupted_unpack_leaves_no_partial_file(monkeypatch, archives):
    def interrupted(source, target, length=0):
        target.write(source.read(1000))
        raise KeyboardInterrupt

    monkeypatch.setattr(data.shutil, "copyfileobj", interrupted)
    with pytest.raises(KeyboardInterrupt):
        data._unpack_archives(archives)
    assert sorted(path.name for path in archives.iterdir()) == sorted(MNIST_FILES)
    monkeypatch.undo()
    data._unpack_archives(archives)
    for archive, size in MNIST_FILES.items():
        assert (archives / archive.removesuffix(".gz")).stat().st_size == size


def test_runs_started_together_all_load(archives):
    """Several processes unpacking the same archives at once (two training runs started
    together) each read complete files: no process sees another's half-written file."""
    code = ("import sys, stnlib.data as d; "
            "print(d.load_mnist(train=True, root=sys.argv[1], download=False)[0].shape[0])")
    processes = [
        subprocess.Popen([sys.executable, "-c", code, str(archives.parent.parent)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [(process, *process.communicate(timeout=300)) for process in processes]
    assert [(p.returncode, out.strip()) for p, out, _ in results] == [(0, "60000")] * 3, [
        err for *_, err in results]


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
    _put_archives(tmp_path, copy=True)
    images, labels = data._load_cached(tmp_path.resolve(), False, True)
    assert torch.equal(images, mnist_arrays[2]) and torch.equal(labels, mnist_arrays[3])


def _fake_download(source: Path, calls: list[str], fail_first: bool = True):
    """A stand-in for torchvision's download_url: the first mirror is unreachable, the
    next one hands over the official archive from ``source``."""
    from urllib.error import URLError

    def download_url(url, root, filename, md5):
        calls.append(f"{url} -> {filename}")
        if fail_first and url.startswith(MNIST.mirrors[0]):
            raise URLError("unreachable")
        name = url.rsplit("/", 1)[1]
        (Path(root) / filename).write_bytes((source / name).read_bytes())

    return download_url


def test_download_goes_through_a_file_of_its_own(monkeypatch, tmp_path):
    source = data_root() / "MNIST" / "raw"
    if not all((source / name).is_file() for name in MNIST_FILES):
        pytest.skip(f"the official archives are not in {source}")
    import torchvision.datasets.utils as tv_utils

    calls: list[str] = []
    monkeypatch.setattr(MNIST, "mirrors", ["https://first.invalid/", "https://second.invalid/"])
    monkeypatch.setattr(tv_utils, "download_url", _fake_download(source, calls))
    raw = tmp_path / "MNIST" / "raw"
    images, labels = data._load_cached(tmp_path.resolve(), False, True)
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    assert len(calls) == 2 * len(MNIST_FILES)  # every archive: the first mirror, then the next
    assert all(call.endswith(f".gz.part-{os.getpid()}") for call in calls)
    assert sorted(path.name for path in raw.iterdir()) == sorted(
        [*MNIST_FILES, *(name.removesuffix(".gz") for name in MNIST_FILES)])
    calls.clear()  # everything is there now: the other split downloads nothing
    data._load_cached(tmp_path.resolve(), True, True)
    assert calls == []


def test_a_failed_download_leaves_no_partial_file(monkeypatch, tmp_path):
    import torchvision.datasets.utils as tv_utils

    def corrupt(url, root, filename, md5):  # writes half a file, then fails its md5 check
        (Path(root) / filename).write_bytes(b"half an archive")
        raise RuntimeError("File not found or corrupted.")

    monkeypatch.setattr(MNIST, "mirrors", ["https://only.invalid/"])
    monkeypatch.setattr(tv_utils, "download_url", corrupt)
    with pytest.raises(MNISTNotFoundError, match="could not be downloaded") as info:
        load_mnist(root=tmp_path)
    assert "File not found or corrupted" in str(info.value)
    assert list((tmp_path / "MNIST" / "raw").iterdir()) == []

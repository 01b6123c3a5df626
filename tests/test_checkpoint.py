"""Checkpoints: round trip, weights_only loading, wrong model, corrupt files, atomic writes."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time

import pytest
import torch
from torch import nn

import stnlib
from stnlib.checkpoint import (
    CheckpointError,
    CheckpointInUseError,
    FileLockedError,
    atomic_save,
    checkpoint_lock,
    class_path,
    file_lock,
    load_checkpoint,
    load_weights,
    read_checkpoint,
    save_checkpoint,
)
from stnlib.models import CNN, STCNN


class Tiny(nn.Module):
    """A model defined outside stnlib.models: loads through the same function."""

    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.config = {"width": width}
        self.linear = nn.Linear(2, width)

    def forward(self, x):
        return self.linear(x)


def small_stcnn(**kw) -> STCNN:
    return STCNN(channels=(4, 8), hidden=16, sampler="torch", **kw)


def test_round_trip_rebuilds_an_equal_model_in_eval_mode(tmp_path):
    model = small_stcnn(seed=4, transform="translation_scale")
    with torch.no_grad():
        model.transformer.localization.head[-1].weight.normal_()
    path = save_checkpoint(tmp_path / "m.pt", model)
    loaded = stnlib.load_checkpoint(path)
    assert isinstance(loaded, STCNN) and not loaded.training
    assert loaded.config == model.config
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["model_class"] == "stnlib.models:STCNN"
    assert load_checkpoint(path, sampler="stnlib").sampler == "stnlib"


def test_models_from_other_modules_load_too(tmp_path):
    model = Tiny(5)
    save_checkpoint(tmp_path / "t.pt", model)
    loaded = load_checkpoint(tmp_path / "t.pt")
    assert type(loaded).__name__ == "Tiny" and loaded.linear.out_features == 5
    assert class_path(model).endswith(":Tiny")


def test_wrong_model_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "s.pt", small_stcnn())
    with pytest.raises(CheckpointError, match="holds a stnlib.models:STCNN model, not the "
                                              "expected stnlib.models:CNN"):
        load_checkpoint(tmp_path / "s.pt", model_class=CNN)
    payload = read_checkpoint(tmp_path / "s.pt")
    with pytest.raises(CheckpointError, match="holds a stnlib.models:STCNN model, but a "
                                              "stnlib.models:CNN was given"):
        load_weights(CNN(), payload)
    with pytest.raises(CheckpointError, match="different settings: channels"):
        load_weights(STCNN(sampler="torch"), payload)


def test_missing_truncated_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")
    path = save_checkpoint(tmp_path / "c.pt", CNN(channels=(2, 2), hidden=4))
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save(CNN().state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="not an stnlib checkpoint"):
        load_checkpoint(tmp_path / "bare.pt")


def test_model_without_config_cannot_be_rebuilt(tmp_path):
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="has no `config` dict"):
        save_checkpoint(tmp_path / "x.pt", model)
    save_checkpoint(tmp_path / "x.pt", model, require_config=False)
    with pytest.raises(CheckpointError, match="cannot be rebuilt"):
        load_checkpoint(tmp_path / "x.pt")
    assert load_weights(nn.Linear(2, 2), read_checkpoint(tmp_path / "x.pt")) is not None


def test_atomic_save_keeps_the_old_file_when_saving_fails(tmp_path):
    path = atomic_save({"a": torch.ones(2)}, tmp_path / "f.pt")
    with pytest.raises(Exception):  # noqa: B017 - any pickling error
        atomic_save({"a": lambda: 0}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pt"]  # no temp file left


# --- one writer per checkpoint ------------------------------------------------------

def test_checkpoint_lock_refuses_a_second_holder_and_is_removed_after(tmp_path):
    path = tmp_path / "runs" / "cell.pt"
    with checkpoint_lock(path) as lock:
        assert lock == tmp_path / "runs" / "cell.pt.lock"
        assert f"process {os.getpid()} on " in lock.read_text()
        with pytest.raises(CheckpointInUseError,
                           match=rf"cell.pt is being trained into right now by process "
                                 rf"{os.getpid()} on .*wait for that run.*another --results"):
            with checkpoint_lock(path):
                pass
        assert isinstance(CheckpointInUseError("x"), ValueError)  # the CLIs print it
    assert not lock.exists()
    with checkpoint_lock(path):  # free again
        pass


def test_checkpoint_lock_takes_over_a_stale_lock_file(tmp_path):
    path = tmp_path / "cell.pt"
    (tmp_path / "cell.pt.lock").write_text("process 1 on a-machine-long-gone\n")
    with checkpoint_lock(path) as lock:
        assert f"process {os.getpid()}" in lock.read_text()
    assert not lock.exists()


@pytest.mark.skipif(os.name == "nt", reason="kills a process with SIGKILL")
def test_checkpoint_lock_of_a_killed_process_is_free_at_once(tmp_path):
    """The operating system drops the lock with its process: a run killed mid-training
    (kill -9, out of memory) leaves a lock file that blocks nothing."""
    path = tmp_path / "cell.pt"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from stnlib.checkpoint import "
         f"checkpoint_lock\nwith checkpoint_lock({str(path)!r}):\n"
         "    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CheckpointInUseError, match=f"by process {holder.pid} on "):
            with checkpoint_lock(path):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / "cell.pt.lock").exists()  # left behind by the killed run ...
    with checkpoint_lock(path):  # ... and taken over
        pass


# --- a short shared lock: read, change, write ---------------------------------------

def test_file_lock_waits_for_the_holder_and_then_takes_it(tmp_path):
    path = tmp_path / "table1.json"
    held, released = threading.Event(), []

    def holder():
        with file_lock(path, 0):
            held.set()
            time.sleep(0.3)
            released.append(time.monotonic())

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    with file_lock(path, 5) as lock:  # waits for the other holder instead of stopping
        taken = time.monotonic()
        assert f"process {os.getpid()} on " in lock.read_text()
    thread.join()
    assert released and taken >= released[0]
    assert not lock.exists()


def test_file_lock_names_the_holder_when_it_keeps_the_lock_too_long(tmp_path):
    path = tmp_path / "table1.json"
    with file_lock(path, 0):
        start = time.monotonic()
        with pytest.raises(FileLockedError,
                           match=rf"table1.json has been locked by process {os.getpid()} on "
                                 r".* for more than 0.2 s \(lock file .*table1.json.lock\): "
                                 r"let that process finish"):
            with file_lock(path, 0.2):
                pass
        assert time.monotonic() - start >= 0.2  # it did wait
        assert isinstance(FileLockedError("x"), ValueError)  # the CLIs print it


@pytest.mark.parametrize("wait_s", [-1, math.nan, math.inf, True, "5"])
def test_file_lock_refuses_a_wait_that_is_not_a_finite_number_of_seconds(tmp_path, wait_s):
    with pytest.raises(ValueError, match="wait_s must be a finite number of seconds >= 0"):
        with file_lock(tmp_path / "f", wait_s):
            pass
    assert not (tmp_path / "f.lock").exists()

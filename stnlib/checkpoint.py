"""Checkpoints: everything needed to rebuild a model, and to resume its training.

A checkpoint is one file written by ``torch.save`` that ``torch.load(path,
weights_only=True)`` can read (plain dicts, lists, numbers, strings and tensors only):

- ``"format"``: ``"stnlib-checkpoint"`` and ``"version"``: 1;
- ``"model_class"``: where the model's class lives, as ``"module:QualName"`` (for
  example ``"stnlib.models:STCNN"``), so models defined in any importable module load
  through the same :func:`load_checkpoint`;
- ``"model_config"``: the constructor keyword arguments (``model.config``);
- ``"model_state"``: the state dict;
- optionally ``"train_state"``, ``"optimizer_state"``, ``"history"`` and ``"fit_args"``,
  written by :func:`stnlib.train.fit` to resume exactly where it stopped.

A model can be checkpointed when it has a ``config`` attribute: a dict of JSON-like
constructor arguments such that ``type(model)(**model.config)`` rebuilds it (every
model in stnlib records one). Files are written atomically: to a temporary file in the
same folder, then ``os.replace``, so an interrupted save never destroys the previous
checkpoint.

While :func:`stnlib.train.fit` trains into a checkpoint it holds :func:`checkpoint_lock`
on it, so a second process started on the same file (the same cell trained twice into
one results folder, say) stops with :class:`CheckpointInUseError` instead of resuming the
first one's state and overwriting its saves. :func:`file_lock` is the same lock for a
short read-change-write of any file several processes update (``table1.json``): the
second process waits for the first instead of stopping.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import pickle
import socket
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT, VERSION = "stnlib-checkpoint", 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, or holds a different model than expected."""


class CheckpointInUseError(CheckpointError):
    """Another process is training into the same checkpoint file right now."""


class FileLockedError(ValueError):
    """Another process has held a file's lock (:func:`file_lock`) longer than we wait."""


def class_path(obj_or_class: Any) -> str:
    """``"module:QualName"`` of a class or of an instance's class."""
    cls = obj_or_class if isinstance(obj_or_class, type) else type(obj_or_class)
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve_class(path: str) -> type:
    """The class named by ``"module:QualName"`` (imports the module)."""
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        raise CheckpointError(f"model_class must look like 'module:QualName', got {path!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as error:
        raise CheckpointError(
            f"the checkpoint's model class {path!r} cannot be imported ({error}): install or "
            "update the code that defines it, or load the file with the version that wrote it"
        ) from error
    if not isinstance(obj, type):
        raise CheckpointError(f"{path!r} names {type(obj).__name__}, not a class")
    return obj


def model_config(model: nn.Module) -> dict:
    """The model's constructor arguments (``model.config``), checked to be storable."""
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise TypeError(
            f"{type(model).__name__} has no `config` dict, so a checkpoint could not rebuild "
            "it: set `self.config = dict(...)` of its constructor arguments in __init__"
        )
    return dict(config)


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj, path)`` through a temporary file and ``os.replace``."""
    return atomic_write(path, "wb", lambda file: torch.save(obj, file))


def atomic_write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    return atomic_write(path, "w", lambda file: file.write(text))


def atomic_write(path: str | os.PathLike[str], mode: str,
                 write: Callable[[Any], object]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``.

    ``mode`` is ``"w"`` (text, UTF-8) or ``"wb"``; ``write`` receives the open file.

    A crash or Ctrl-C mid-write leaves the previous ``path`` intact (never a half file).
    The result gets the permissions a plain ``open`` would give (mkstemp makes 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, require_config: bool = True,
                    **extra: Any) -> Path:
    """Write ``model`` (class, config, weights) and any ``extra`` entries atomically.

    ``require_config=False`` also accepts a model without ``config`` (a training state
    that :func:`stnlib.train.fit` can resume, but :func:`load_checkpoint` cannot rebuild).
    """
    config = model_config(model) if require_config else getattr(model, "config", None)
    payload = {
        "format": FORMAT, "version": VERSION,
        "model_class": class_path(model), "model_config": config,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    return atomic_save(payload, path)


def read_checkpoint(path: str | os.PathLike[str]) -> dict:
    """Load and validate a checkpoint dict (CPU tensors), with clear errors.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        CheckpointError: the file is truncated / not a torch file / not an stnlib checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}: check the path, or train first "
            "(python -m stnlib train --out DIR writes DIR/checkpoint.pt)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError,
            ValueError) as error:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}): the file is truncated or "
            "corrupt (was a save interrupted or a download cut short?). Use an earlier "
            "checkpoint or train again."
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a torch file but not an stnlib checkpoint (no format={FORMAT!r}); "
            "a bare state dict can be loaded with model.load_state_dict(torch.load(path))"
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')!r}; this stnlib reads "
            f"version {VERSION}"
        )
    return payload


def load_weights(model: nn.Module, payload: dict, path: str | os.PathLike[str] = "checkpoint"
                 ) -> nn.Module:
    """Copy the checkpoint's weights into ``model``, after checking it is the same model."""
    want, have = payload["model_class"], class_path(model)
    if want != have:
        raise CheckpointError(
            f"{path} holds a {want} model, but a {have} was given: build the model the "
            f"checkpoint was written for (or use stnlib.load_checkpoint(path), which does)"
        )
    config = getattr(model, "config", None)
    saved = payload.get("model_config")
    if isinstance(config, dict) and isinstance(saved, dict) and _jsonish(config) != _jsonish(saved):
        diff = sorted(k for k in set(config) | set(payload["model_config"])
                      if _jsonish(config.get(k)) != _jsonish(payload["model_config"].get(k))
                      and k != "seed" and k != "sampler")
        if diff:
            raise CheckpointError(
                f"{path} was written for {want} with different settings: "
                + ", ".join(f"{k}={payload['model_config'].get(k)!r} (given model: "
                            f"{config.get(k)!r})" for k in diff)
            )
    try:
        model.load_state_dict(payload["model_state"])
    except RuntimeError as error:
        raise CheckpointError(
            f"{path} does not fit {have}: {str(error).splitlines()[0]}"
        ) from error
    return model


def load_checkpoint(path: str | os.PathLike[str], model_class: type | str | None = None,
                    map_location: str | torch.device = "cpu", **overrides: Any) -> nn.Module:
    """Rebuild the model stored in ``path`` and return it in eval mode.

    Args:
        path: a checkpoint written by :func:`save_checkpoint` or :func:`stnlib.train.fit`.
        model_class: if given (a class or ``"module:QualName"``), the checkpoint must hold
            that class, else :class:`CheckpointError` says what it holds instead.
        map_location: device for the model.
        overrides: constructor arguments to change that do not affect the weights, e.g.
            ``sampler="torch"``.
    """
    payload = read_checkpoint(path)
    if model_class is not None:
        expected = model_class if isinstance(model_class, str) else class_path(model_class)
        if expected != payload["model_class"]:
            raise CheckpointError(
                f"{path} holds a {payload['model_class']} model, not the expected {expected}"
            )
    if payload.get("model_config") is None:
        raise CheckpointError(
            f"{path} holds the weights of a {payload['model_class']} without its constructor "
            "arguments (the model had no `config`), so it cannot be rebuilt: build the model "
            "yourself and call stnlib.checkpoint.load_weights(model, read_checkpoint(path))"
        )
    cls = resolve_class(payload["model_class"])
    config = {**payload["model_config"], **overrides}
    try:
        model = cls(**config)
    except TypeError as error:
        raise CheckpointError(
            f"{payload['model_class']} cannot be rebuilt from the checkpoint's config "
            f"{config}: {error} (was the class changed since the checkpoint was written?)"
        ) from error
    load_weights(model, {**payload, "model_config": getattr(model, "config", config)}, path)
    return model.to(map_location).eval()


def _jsonish(value: Any) -> Any:
    """Compare configs across tuple/list differences."""
    if isinstance(value, (tuple, list)):
        return [_jsonish(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonish(v) for k, v in value.items()}
    return value


# ------------------------------------------------------------------------------------
# one writer per checkpoint
# ------------------------------------------------------------------------------------

def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file of a checkpoint: ``<path>.lock`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on the open file ``fd`` without waiting; False if held.

    The operating system drops the lock when the process ends, however it ends, so a lock
    left by a crashed or killed run never blocks the next one.
    """
    try:
        if os.name == "nt":  # pragma: no cover - Windows
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _holder(lock: Path) -> str:
    """Who holds ``lock``, as its holder wrote it (best effort)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = lock.read_text(encoding="utf-8").strip()
        if text:
            return text
    return "another process"


def _acquire(lock: Path, wait_s: float) -> int | None:
    """An open descriptor of ``lock`` that holds its lock, or None if another process
    still holds it after ``wait_s`` seconds (polled every 50 ms)."""
    deadline = time.monotonic() + wait_s
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        if not _try_lock(fd):
            os.close(fd)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
            continue
        try:  # the holder before us may have removed the file we opened: start again
            current = os.stat(lock)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            return fd
        os.close(fd)


def checkpoint_lock(path: str | os.PathLike[str]) -> contextlib.AbstractContextManager[Path]:
    """Hold the lock of checkpoint ``path`` (file ``<path>.lock``) inside this block.

    Only one process at a time can hold it. A second one gets
    :class:`CheckpointInUseError`, which names the holder (process id, host, start time)
    and what to do, before it reads or writes the checkpoint. The lock file is removed
    when the block ends; a stale one (its process gone) is simply taken over.
    Yields the lock file's path.
    """
    def refusal(lock: Path, holder: str) -> Exception:
        return CheckpointInUseError(
            f"{path} is being trained into right now by {holder} "
            f"(lock file {lock}): wait for that run to finish, or give this one another "
            "checkpoint path (python -m stnlib paper: another --results folder). If no "
            "such run exists any more, delete the lock file."
        )

    return file_lock(path, 0, refusal=refusal)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], wait_s: float = 60.0, *,
              refusal: Callable[[Path, str], Exception] | None = None) -> Iterator[Path]:
    """Hold the lock of any file ``path`` (file ``<path>.lock``) inside this block, waiting
    up to ``wait_s`` seconds for another process to let it go.

    For short read-change-write sections of a file that several processes update (two
    ``python -m stnlib paper`` runs finishing cells into one ``table1.json``): the
    second waits for the first's write and then reads it, so neither result is lost.
    The operating system drops a lock with its process, however it ends, so a lock file
    left by a killed process blocks nothing; the lock file is removed when the block ends.
    If the lock is still taken after ``wait_s``, raises ``refusal(lock file, holder)``
    (default: :class:`FileLockedError` naming the holder). Yields the lock file's path.
    """
    if (isinstance(wait_s, bool) or not isinstance(wait_s, (int, float))
            or not (math.isfinite(wait_s) and wait_s >= 0)):
        raise ValueError(f"wait_s must be a finite number of seconds >= 0, got {wait_s!r}")
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock, float(wait_s))
    if fd is None:
        holder = _holder(lock)
        if refusal is not None:
            raise refusal(lock, holder)
        raise FileLockedError(
            f"{path} has been locked by {holder} for more than {wait_s:g} s (lock file "
            f"{lock}): let that process finish and run this again. If no such process "
            "exists any more, delete the lock file.")
    try:
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}, since {stamp}\n"
                 .encode())
        yield lock
    finally:
        if os.name == "nt":  # pragma: no cover - Windows cannot remove an open file
            os.close(fd)  # unlocks; a process that opened it meanwhile keeps it (harmless)
            with contextlib.suppress(OSError):
                lock.unlink()
        else:  # removed while still held, so no one can lock a file about to vanish
            with contextlib.suppress(OSError):
                lock.unlink()
            os.close(fd)

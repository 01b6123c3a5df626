"""Training and evaluation: ``fit`` / ``evaluate``, checkpoints, resume, progress, CLI.

One loop for every model of the course (2D or 3D): batches come from an in-memory
:class:`~stnlib.data.ImageSet` by index slicing, all randomness (shuffling, a
``train_transform``'s draws, dropout) comes from ``seed``, and the same seed gives the
same weights on one machine (another CPU may round differently: :func:`machine`). A
checkpoint written at the end of each epoch (and every ``checkpoint_every`` steps) lets an
interrupted run resume to exactly the result of an uninterrupted one. A non-finite loss
stops training with a message naming the step.

For the lessons, :func:`train_model` is the one call: it builds the model, loads MNIST
and trains with the course's defaults, shrunk to seconds in fast mode
(:func:`stnlib.fast_mode`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stnlib.checkpoint import (
    atomic_write_text,
    checkpoint_lock,
    load_weights,
    read_checkpoint,
    save_checkpoint,
)
from stnlib.data import ImageSet
from stnlib.progress import epoch_line, progress_style

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("onecycle", "step", "constant")
#: peak learning rate of each optimizer when ``lr`` is not given
DEFAULT_LR = {"adam": 4e-3, "adamw": 4e-3, "sgd": 0.05}


class TrainingDivergedError(FloatingPointError):
    """The loss became nan or inf; the message names the step, the likely cause and the fix."""


@dataclass
class History:
    """Per-epoch record of a training run (plain lists: ``json.dumps(h.to_dict())`` works).

    ``test_acc`` holds None for epochs trained without a test set; ``epoch_s`` is the
    training time of each epoch and ``eval_s`` the time spent evaluating after it.
    ``segments`` has one entry per call of :func:`fit` that trained the run, ``{"from_step":
    step, **machine()}``: more than one means it was resumed, and where (a run resumed on a
    CPU with other instructions is neither machine's uninterrupted result).
    """

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_acc: list[float | None] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    epoch_s: list[float] = field(default_factory=list)
    eval_s: list[float] = field(default_factory=list)
    steps: int = 0
    completed: bool = False
    segments: list[dict[str, Any]] = field(default_factory=list)

    def trained_on(self) -> dict[str, Any]:
        """The machine that trained the run last (:func:`machine`'s keys): its last segment's,
        or this machine's for a run from a checkpoint written before segments were kept."""
        if not self.segments:
            return machine()
        return {k: v for k, v in self.segments[-1].items() if k != "from_step"}

    @property
    def train_s(self) -> float:
        """Total training time in seconds (without evaluation)."""
        return float(sum(self.epoch_s))

    @property
    def final_test_acc(self) -> float | None:
        return self.test_acc[-1] if self.test_acc else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        return cls(**{k: (list(v) if isinstance(v, (list, tuple)) else v)
                      for k, v in data.items()})


# ------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------


def _logits(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, image_set: ImageSet, batch_size: int = 1000,
            transform: Transform | None = None, seed: int = 0,
            channels_last: bool = False) -> torch.Tensor:
    """The class ``model`` predicts for every image of ``image_set``: (N,) int64, on the CPU.

    Args:
        model: classifier mapping float (B, C, H, W) or (B, C, D, H, W) in [0, 1] to logits.
        image_set: the images (their labels are not used).
        batch_size: images per forward pass.
        transform: optional ``transform(images, generator) -> images`` applied to each
            batch on the model's device (e.g. :class:`stnlib.data.RandomAffine`), drawn
            from ``seed``.
        channels_last: feed batches in channels-last memory format.

    Runs in eval mode without gradients (``torch.no_grad``); the model's train/eval mode
    is restored afterwards.
    """
    if not isinstance(image_set, ImageSet):
        raise TypeError(f"image_set must be a stnlib.data.ImageSet, got {type(image_set).__name__}")
    was_training, device = model.training, _device(model)
    model.eval()
    generator = torch.Generator().manual_seed(int(seed))
    predictions = []
    try:
        for images, _ in image_set.batches(batch_size):
            images = images.to(device, non_blocking=True)
            if transform is not None:
                images = transform(images, generator)
            images = _to_device(images, device, channels_last)
            predictions.append(_logits(model(images)).argmax(1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long)


def evaluate(model: nn.Module, image_set: ImageSet, batch_size: int = 1000,
             transform: Transform | None = None, seed: int = 0,
             channels_last: bool = False) -> float:
    """Accuracy of ``model`` on ``image_set`` (fraction in [0, 1]), in eval mode; the
    arguments are those of :func:`predict`."""
    predictions = predict(model, image_set, batch_size, transform, seed, channels_last)
    return int((predictions == image_set.labels).sum()) / max(len(image_set), 1)


def _to_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    if channels_last and images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


# ------------------------------------------------------------------------------------
# learning-rate schedules (a pure function of the step: nothing to save for resume)
# ------------------------------------------------------------------------------------


def lr_at(step: int, total_steps: int, lr: float, schedule: str) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``.

    ``"onecycle"``: linear warm-up from lr/25 to lr over the first 25% of the steps, then
    cosine annealing to lr/1e4. ``"step"``: lr, divided by 10 at 50% and again at 75%.
    ``"constant"``: lr.
    """
    if schedule == "constant":
        return lr
    progress = step / max(total_steps, 1)
    if schedule == "step":
        return lr * (0.1 ** ((progress >= 0.5) + (progress >= 0.75)))
    if schedule == "onecycle":
        warm = 0.25
        if progress < warm:
            return lr / 25 + (lr - lr / 25) * progress / warm
        cosine = 0.5 * (1 + math.cos(math.pi * (progress - warm) / (1 - warm)))
        return lr / 1e4 + (lr - lr / 1e4) * cosine
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def _holds(key: str, name: str) -> bool:
    """Whether parameter ``name`` is ``key`` or lies in the submodule ``key``."""
    return name == key or name.startswith(key + ".")


def _owner(name: str, prefixes: Mapping[str, float]) -> str | None:
    """The longest key of ``prefixes`` holding parameter ``name``."""
    owners = [k for k in prefixes if _holds(k, name)]
    return max(owners, key=len) if owners else None


def param_groups(model: nn.Module, lr_scales: Mapping[str, float] | None = None
                 ) -> list[dict[str, Any]]:
    """The trainable parameters of ``model`` as optimizer groups, each with an
    ``"lr_scale"``: the learning rate of a parameter whose name starts with a key of
    ``lr_scales`` (a submodule such as ``"localisation"``) is multiplied by its value
    (the longest matching key wins); every other parameter keeps scale 1."""
    lr_scales = dict(lr_scales or {})
    groups: dict[float, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            owner = _owner(name, lr_scales)
            groups.setdefault(1.0 if owner is None else float(lr_scales[owner]), []).append(param)
    return [{"params": params, "lr_scale": scale} for scale, params in groups.items()]


def _optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float,
               lr_scales: Mapping[str, float] | None = None) -> torch.optim.Optimizer:
    params = param_groups(model, lr_scales)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0,
                               weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


@contextlib.contextmanager
def _training_context(seed: int, threads: int | None, deterministic: bool) -> Iterator[None]:
    """Fork torch's global RNG (dropout draws from it), set threads / determinism, restore."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        try:
            if threads:
                torch.set_num_threads(int(threads))
            if deterministic:
                torch.use_deterministic_algorithms(True, warn_only=True)
            yield
        finally:
            torch.set_num_threads(old_threads)
            torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


# environment variables that select the CPU kernels torch's libraries use (read at start-up)
CPU_KNOBS: tuple[str, ...] = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                              "MKL_ENABLE_INSTRUCTIONS")

#: Kernel profiles by name: the :data:`CPU_KNOBS` to set before torch loads (in a fresh
#: process) to train as a CPU with those instructions would. ``native``: this CPU's own;
#: ``avx2``: ATen, oneDNN and MKL held to AVX2 (an AMD EPYC Zen 2/3, an Intel CPU without
#: AVX-512); ``scalar``: ATen's plain C++ kernels, oneDNN held to SSE4.1.
CPU_PROFILES: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "scalar": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


def profile_environment(profile: str) -> dict[str, str]:
    """The environment for a fresh process that trains under the kernel profile ``profile``
    (:data:`CPU_PROFILES`): this process's, less any :data:`CPU_KNOBS` it has set, plus
    the profile's (``native`` sets none, so the new process gets the CPU's own kernels)."""
    return {k: v for k, v in os.environ.items() if k not in CPU_KNOBS} | CPU_PROFILES[profile]


def machine(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """The CPU a run trains on, for its record: ``{"cpu": model name, "cpu_capability": ...}``.

    The same seed and settings give identical weights on one machine (same torch, CPU and
    ``threads``). Another CPU may round differently from the first steps: torch picks its
    kernels by the CPU's vector instruction set (``cpu_capability``, e.g. ``"AVX2"`` or
    ``"AVX512"``; oneDNN and MKL do the same), and a long run then ends as another draw
    from the seed's spread, not as the same number. Recording the CPU lets two results be
    compared knowingly. ``cpuinfo`` is read for the model name where it exists (Linux);
    elsewhere ``platform.processor()`` names it. Environment variables that hold the
    libraries to older instructions (:data:`CPU_KNOBS`, e.g. to emulate another CPU, as
    ``benchmarks/rounding.py`` does) are added as ``"cpu_limits"`` when set.
    """
    name = ""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                name = " ".join(value.split())
                break
    name = name or platform.processor() or platform.machine() or "unknown"
    found = {"cpu": name, "cpu_capability": str(torch.backends.cpu.get_cpu_capability())}
    limits = {k: os.environ[k] for k in CPU_KNOBS if os.environ.get(k)}
    return {**found, "cpu_limits": limits} if limits else found


def _diverged(loss: torch.Tensor, images: torch.Tensor, model: nn.Module, epoch: int,
              epochs: int, step: int, pos: int, steps_per_epoch: int, lr_now: float,
              checkpoint: Path | None) -> TrainingDivergedError:
    if not torch.isfinite(images).all():
        cause = ("the input batch itself contains nan/inf values (check the data and any "
                 "train_transform)")
        fix = "clean the data or the transform"
    elif any(not torch.isfinite(p).all() for p in model.parameters()):
        cause = "the weights already contain nan/inf: an earlier update diverged"
        fix = f"lower the learning rate (now {lr_now:.3g}; try lr={lr_now / 10:.3g})"
    else:
        cause = "finite inputs gave a non-finite loss: the updates are too large"
        fix = f"lower the learning rate (now {lr_now:.3g}; try lr={lr_now / 10:.3g})"
    where = (f"resume from the last good checkpoint {checkpoint} with resume=True after the fix"
             if checkpoint is not None else "pass checkpoint=PATH to be able to resume")
    return TrainingDivergedError(
        f"training stopped: the loss is {loss.item()} at step {step + 1} (epoch {epoch + 1}/"
        f"{epochs}, batch {pos + 1}/{steps_per_epoch}); {cause}. Fix: {fix}; {where}."
    )


# ------------------------------------------------------------------------------------
# fit
# ------------------------------------------------------------------------------------


def fit(
    model: nn.Module,
    train_set: ImageSet,
    test_set: ImageSet | None = None,
    *,
    epochs: int,
    batch_size: int = 256,
    lr: float | None = None,
    optimizer: str = "adam",
    schedule: str = "onecycle",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    label_smoothing: float = 0.0,
    lr_scales: Mapping[str, float] | None = None,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: int | None = None,
    progress: bool | str = True,
    train_transform: Transform | None = None,
    max_steps: int | None = None,
    eval_batch_size: int = 1000,
    channels_last: bool = True,
    threads: int | None = None,
    deterministic: bool = True,
) -> History:
    """Train ``model`` on ``train_set``; returns the :class:`History`.

    Args:
        model: any classifier mapping float (B, C, H, W) or (B, C, D, H, W) images in
            [0, 1] to logits (B, classes) (a tuple output uses its first element). Trained
            in place on its current device.
        train_set, test_set: in-memory :class:`~stnlib.data.ImageSet`; the test accuracy
            is measured after every epoch when ``test_set`` is given.
        epochs: passes over ``train_set``; each has ``len(train_set) // batch_size``
            steps (a final incomplete batch is dropped, it would upset batch norm).
        batch_size: images per step (capped at ``len(train_set)``).
        lr: peak learning rate; default :data:`DEFAULT_LR` of the optimizer.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (Nesterov momentum ``momentum``).
        schedule: ``"onecycle"``, ``"step"`` or ``"constant"``, see :func:`lr_at`.
        weight_decay, label_smoothing: the usual regularisers (0 = off).
        lr_scales: learning-rate multipliers by submodule, e.g. ``{"localisation": 0.1}``
            trains the parameters under ``model.localisation`` at a tenth of the schedule's
            rate (see :func:`param_groups`). Each key must name parameters of ``model``.
        seed: seeds the shuffling, ``train_transform``'s generator and torch's global
            generator inside the run (dropout), which is forked: the caller's random
            state is untouched. Same seed and settings -> identical weights on the same
            machine; another CPU may round differently and end elsewhere (:func:`machine`).
        checkpoint: file to write (atomically) after every epoch, every
            ``checkpoint_every`` steps and when ``max_steps`` stops the run.
        resume: continue from ``checkpoint`` if it exists (a finished run returns at once);
            the result equals an uninterrupted run. Without ``resume`` an existing
            checkpoint file is an error, never silently overwritten. While it trains, fit
            holds the checkpoint's lock (:func:`stnlib.checkpoint.checkpoint_lock`): a
            second run on the same file stops at once with ``CheckpointInUseError``.
        progress: ``True`` (the style of ``$STNLIB_PROGRESS``, bars by default),
            ``"bars"`` (tqdm), ``"lines"`` (one printed line per epoch) or ``False``;
            see :mod:`stnlib.progress`.
        train_transform: ``f(images (B, C, H, W), generator) -> images`` applied to every
            training batch, e.g. :class:`stnlib.data.RandomAffine` (fresh draws per batch).
            It gets the batch on the model's device and the run's CPU generator: draw
            on the CPU, warp on the device (as ``RandomAffine`` and ``distort`` do).
            A transform with a ``set_progress(step, total_steps)`` method is told the
            step before each batch (a curriculum, e.g. ``distort.train_transform("R",
            turn_ramp=0.1)``); the step is fit's own, so a resumed run continues it.
        max_steps: stop after this many steps in total (saving a checkpoint); the schedule
            still spans ``epochs``, so resuming later finishes the same run.
        channels_last: feed 2D image batches in channels-last memory format (and convert
            the model): a large speed-up for convolutions on CPU. Ignored for volumes.
        threads: torch threads during the run (restored after); None keeps the current.
            On a machine whose cores are busy with other work, ``threads=1`` can be many
            times faster than torch's default (its OpenMP threads wait for each other).
        deterministic: ``torch.use_deterministic_algorithms(True, warn_only=True)`` during
            the run (restored after).

    Raises:
        TrainingDivergedError: the loss became nan/inf (message names the step and the fix).
        ValueError / TypeError: bad arguments, or a checkpoint from different settings.
        stnlib.checkpoint.CheckpointInUseError: another process is training into
            ``checkpoint`` (a ValueError too).
    """
    _check_fit_args(model, train_set, test_set, epochs, batch_size, lr, optimizer, schedule,
                    max_steps, train_transform, weight_decay, lr_scales, label_smoothing)
    style = progress_style(progress)
    batch_size = min(int(batch_size), len(train_set))
    lr = float(DEFAULT_LR[optimizer] if lr is None else lr)
    steps_per_epoch = len(train_set) // batch_size
    total_steps = epochs * steps_per_epoch
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    fit_args = dict(epochs=int(epochs), batch_size=batch_size, lr=lr, optimizer=optimizer,
                    schedule=schedule, weight_decay=float(weight_decay),
                    momentum=float(momentum), label_smoothing=float(label_smoothing),
                    seed=int(seed), train_size=len(train_set),
                    train_transform=describe_transform(train_transform))
    if lr_scales:  # absent otherwise, so checkpoints written before it still resume
        fit_args["lr_scales"] = {str(k): float(v) for k, v in sorted(lr_scales.items())}
    device = _device(model)
    channels_last = bool(channels_last) and len(train_set.image_shape) == 3  # 2D images only
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = _optimizer(model, optimizer, lr, float(weight_decay), float(momentum), lr_scales)

    lock = checkpoint_lock(checkpoint) if checkpoint is not None else contextlib.nullcontext()
    with _training_context(seed, threads, deterministic), lock:
        generator = torch.Generator().manual_seed(int(seed))
        history, state = History(), None
        if checkpoint is not None and checkpoint.exists():
            if not resume:
                raise ValueError(
                    f"checkpoint={str(checkpoint)!r} already exists: pass resume=True "
                    "(--resume) to continue it, or choose another path / delete it"
                )
            payload = read_checkpoint(checkpoint)
            _check_same_run(payload.get("fit_args"), fit_args, checkpoint)
            load_weights(model, payload, checkpoint)
            opt.load_state_dict(payload["optimizer_state"])
            state = payload["train_state"]
            history = History.from_dict(payload["history"])
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
        epoch = state["epoch"] if state else 0
        step = state["step"] if state else 0
        pos = state["pos"] if state else 0
        sums = dict(state["sums"]) if state else _zero_sums()
        epoch_start = state["epoch_start"] if state else None
        if not history.completed:  # a finished run returns at once: no new segment
            history.segments.append({"from_step": step, **machine()})

        def save() -> None:
            if checkpoint is None:
                return
            train_state = dict(epoch=epoch, step=step, pos=pos, sums=dict(sums),
                               generator=generator.get_state(), torch_rng=torch.get_rng_state(),
                               epoch_start=epoch_start if epoch_start is not None
                               else generator.get_state())
            save_checkpoint(checkpoint, model, require_config=False,
                            optimizer_state=opt.state_dict(),
                            train_state=train_state, history=history.to_dict(),
                            fit_args=fit_args)

        from tqdm.auto import tqdm

        bars = style == "bars"
        bar = tqdm(total=epochs, initial=epoch, desc="training", unit="epoch",
                   disable=not bars, dynamic_ncols=True)
        try:
            while epoch < epochs:
                if max_steps is not None and step >= max_steps:
                    break
                if pos == 0:
                    epoch_start = generator.get_state()
                    order = torch.randperm(len(train_set), generator=generator)
                else:  # resuming mid-epoch: redraw this epoch's order, then continue
                    order = torch.randperm(
                        len(train_set), generator=torch.Generator().set_state(epoch_start))
                model.train()
                inner = tqdm(total=steps_per_epoch, initial=pos, leave=False, unit="batch",
                             desc=f"epoch {epoch + 1}/{epochs}", disable=not bars,
                             dynamic_ncols=True)
                start = time.perf_counter()
                while pos < steps_per_epoch:
                    if max_steps is not None and step >= max_steps:
                        break
                    index = order[pos * batch_size:(pos + 1) * batch_size]
                    images, labels = train_set.float_images(index), train_set.labels[index]
                    if train_transform is not None:  # on the model's device (a GPU: no CPU warp)
                        if hasattr(train_transform, "set_progress"):  # a curriculum
                            train_transform.set_progress(step, total_steps)
                        images = train_transform(images.to(device, non_blocking=True),
                                                 generator)
                    images = _to_device(images, device, channels_last)
                    labels = labels.to(device)
                    lr_now = lr_at(step, total_steps, lr, schedule)
                    for group in opt.param_groups:
                        group["lr"] = lr_now * group.get("lr_scale", 1.0)
                    logits = _logits(model(images))
                    loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
                    if not torch.isfinite(loss):
                        raise _diverged(loss, images, model, epoch, epochs, step, pos,
                                        steps_per_epoch, lr_now, checkpoint)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sums["loss"] += loss.item() * len(labels)
                    sums["correct"] += int((logits.detach().argmax(1) == labels).sum())
                    sums["seen"] += len(labels)
                    step, pos = step + 1, pos + 1
                    inner.update()
                    if pos % 10 == 0 or pos == steps_per_epoch:
                        inner.set_postfix(loss=f"{sums['loss'] / sums['seen']:.4f}",
                                          acc=f"{sums['correct'] / sums['seen']:.4f}",
                                          refresh=False)
                    if checkpoint_every and step % checkpoint_every == 0 and \
                            pos < steps_per_epoch:
                        sums["time"] += time.perf_counter() - start
                        start = time.perf_counter()
                        save()
                sums["time"] += time.perf_counter() - start
                inner.close()
                if pos < steps_per_epoch:  # stopped by max_steps
                    break
                eval_start = time.perf_counter()
                test_acc = (evaluate(model, test_set, eval_batch_size,
                                     channels_last=channels_last)
                            if test_set is not None else None)
                history.epoch.append(epoch + 1)
                history.train_loss.append(sums["loss"] / max(sums["seen"], 1))
                history.train_acc.append(sums["correct"] / max(sums["seen"], 1))
                history.test_acc.append(test_acc)
                history.lr.append(lr_now)
                history.epoch_s.append(sums["time"])
                history.eval_s.append(time.perf_counter() - eval_start)
                history.steps = step
                epoch, pos, sums, epoch_start = epoch + 1, 0, _zero_sums(), None
                history.completed = epoch >= epochs
                if style == "lines":
                    print(epoch_line(epoch, epochs, history.train_loss[-1],
                                     history.train_acc[-1], test_acc,
                                     history.epoch_s[-1] + history.eval_s[-1]), flush=True)
                bar.update()
                bar.set_postfix(loss=f"{history.train_loss[-1]:.4f}",
                                **({"test_acc": f"{test_acc:.4f}"} if test_acc is not None
                                   else {}))
                save()
            else:
                history.completed = True
            if pos > 0:  # stopped by max_steps in the middle of an epoch
                history.steps = step
                save()
        finally:
            bar.close()
    model.eval()
    return history


def _zero_sums() -> dict[str, float]:
    return {"loss": 0.0, "correct": 0, "seen": 0, "time": 0.0}


def _check_fit_args(model, train_set, test_set, epochs, batch_size, lr, optimizer, schedule,
                    max_steps, train_transform, weight_decay=0.0, lr_scales=None,
                    label_smoothing=0.0) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if next(model.parameters(), None) is None:
        raise ValueError("model has no parameters to train")
    for name, value in (("train_set", train_set), ("test_set", test_set)):
        if value is not None and not isinstance(value, ImageSet):
            raise TypeError(
                f"{name} must be a stnlib.data.ImageSet, got {type(value).__name__}: wrap "
                "tensors with ImageSet(images, labels)"
            )
    if train_set is None or len(train_set) == 0:
        raise ValueError("train_set is empty")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float))
                           or not 0 < lr < math.inf):
        raise ValueError(f"lr must be a positive finite number or None, got {lr!r}")
    if (isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float))
            or not 0 <= weight_decay < math.inf):
        raise ValueError(f"weight_decay must be a finite number >= 0 (0: none), got "
                         f"{weight_decay!r}")
    if (isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float))
            or not 0 <= label_smoothing < 1):
        raise ValueError(f"label_smoothing must be a number in [0, 1) (0: none), got "
                         f"{label_smoothing!r}")
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 0):
        raise ValueError(f"max_steps must be a non-negative int or None, got {max_steps!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if train_transform is not None and not callable(train_transform):
        raise TypeError("train_transform must be callable as f(images, generator) -> images")
    if lr_scales is not None:
        _check_lr_scales(model, lr_scales)


def _check_lr_scales(model: nn.Module, lr_scales: Any) -> None:
    if not isinstance(lr_scales, Mapping):
        raise TypeError(f"lr_scales must be a dict such as {{'localisation': 0.1}}, got "
                        f"{type(lr_scales).__name__}")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    for key, scale in lr_scales.items():
        if not isinstance(key, str) or not any(_holds(key, n) for n in names):
            tops = sorted({n.split(".")[0] for n in names})
            raise ValueError(f"lr_scales key {key!r} names no trainable parameter of the "
                             f"model; its submodules are {', '.join(tops)}")
        if (isinstance(scale, bool) or not isinstance(scale, (int, float))
                or not 0 < scale < math.inf):
            raise ValueError(f"lr_scales[{key!r}] must be a positive finite number, got "
                             f"{scale!r}")


def describe_transform(transform: Transform | None) -> str | None:
    """How a checkpoint records ``train_transform``: its ``repr`` without the memory address
    (``<function f at 0x7f...>`` differs in every process, and would refuse every resume).
    Give a transform a ``__repr__`` that names its settings, as :class:`RandomAffine` and
    :func:`stnlib.distort.train_transform` do, so that a resume with other settings is refused."""
    if transform is None:
        return None
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))


def _check_same_run(saved: dict | None, now: dict, path: Path) -> None:
    if saved is None:
        raise ValueError(f"{path} holds a model but no training state; it cannot be resumed")
    diff = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if diff:
        raise ValueError(
            f"cannot resume {path}: it was trained with different settings ("
            + ", ".join(f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}" for k in diff)
            + "). Resume with the same settings, or start a new run with another checkpoint path."
        )


# ------------------------------------------------------------------------------------
# the course's defaults, and fast mode, in one call
# ------------------------------------------------------------------------------------


def training_settings(fast: bool | None = None) -> dict[str, Any]:
    """The course's default training settings; in fast mode a tiny run on the same path.

    Returns ``fit`` keyword arguments plus ``train_subset`` / ``test_subset`` (None =
    the whole split) and ``augment`` (use :func:`default_augmentation` as
    ``train_transform``). ``fast=None`` reads :func:`stnlib.fast_mode`. Notebooks call this
    (or :func:`train_model`, which uses it) so one switch shrinks every lesson.
    """
    from stnlib.fastmode import fast_mode

    if fast is None:
        fast = fast_mode()
    settings = dict(epochs=8, batch_size=256, lr=DEFAULT_LR["adam"], optimizer="adam",
                    schedule="onecycle", weight_decay=0.0, augment=True, train_subset=None,
                    test_subset=None)
    if fast:
        settings.update(epochs=2, batch_size=128, train_subset=2000, test_subset=1000)
    return settings


def default_augmentation(sampler: str = "stnlib"):
    """The light augmentation of the course's training: a fresh random similarity per image
    (rotation within +-10 degrees, scale 0.9-1.1, shift up to 8% of the width), drawn with
    the training generator and applied with the same sampler as the model."""
    from stnlib.data import RandomAffine

    return RandomAffine(degrees=(-10.0, 10.0), scale=(0.9, 1.1), translate_x=(-0.08, 0.08),
                        translate_y=(-0.08, 0.08), sampler=sampler)


def train_model(
    model: str | nn.Module = "stcnn",
    *,
    fast: bool | None = None,
    seed: int = 0,
    sampler: str = "stnlib",
    train_set: ImageSet | None = None,
    test_set: ImageSet | None | bool = None,
    root: str | Path | None = None,
    progress: bool | str = True,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    **overrides: Any,
) -> tuple[nn.Module, History]:
    """Build (or take) a model and train it on MNIST with the course's defaults.

    Args:
        model: ``"cnn"``, ``"stcnn"`` (built with ``seed`` and ``sampler``) or a module.
        fast: shrink to a seconds-long run (default: :func:`stnlib.fast_mode`).
        seed: seed of the initial weights and of the training.
        sampler: ``"stnlib"`` or ``"torch"`` for a model built here.
        train_set, test_set: default MNIST train / test (subsets in fast mode);
            ``test_set=False`` skips the per-epoch test.
        root: MNIST root (see :mod:`stnlib.data`).
        progress, checkpoint, resume: as in :func:`fit`.
        overrides: any :func:`fit` argument or ``train_subset`` / ``test_subset`` /
            ``augment``, e.g. ``epochs=3``, ``lr=1e-3``, ``augment=False``,
            ``train_transform=RandomAffine(...)``.

    Returns:
        ``(model, history)``, the model in eval mode.
    """
    from stnlib.data import mnist
    from stnlib.models import build_model

    settings = {**training_settings(fast), **overrides}
    train_subset = settings.pop("train_subset")
    test_subset = settings.pop("test_subset")
    if settings.pop("augment") and settings.get("train_transform") is None:
        settings["train_transform"] = default_augmentation(sampler)
    if isinstance(model, str):
        model = build_model(model, seed=seed, sampler=sampler)
    if train_set is None:
        train_set = mnist(True, root)
        if train_subset:
            train_set = train_set.subset(train_subset)
    if test_set is None:
        test_set = mnist(False, root)
        if test_subset:
            test_set = test_set.subset(test_subset)
    elif test_set is False:
        test_set = None
    history = fit(model, train_set, test_set, seed=seed, progress=progress,
                  checkpoint=checkpoint, resume=resume, **settings)
    return model, history


# ------------------------------------------------------------------------------------
# command line: python -m stnlib train | eval
# ------------------------------------------------------------------------------------


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``eval`` to ``python -m stnlib``."""
    defaults = training_settings(fast=False)
    train = subparsers.add_parser(
        "train", help="train a CNN or ST-CNN on MNIST, print JSON, write DIR/metrics.json",
        description="Train on MNIST; ends with one JSON line {model, epochs, seed, test_acc, "
                    "train_s, ...} and writes it to DIR/metrics.json, the model to "
                    "DIR/checkpoint.pt and the per-epoch history to DIR/history.json.")
    train.add_argument("--model", choices=["cnn", "stcnn"], default="stcnn")
    train.add_argument("--epochs", type=int, default=None,
                       help=f"passes over the training set (default {defaults['epochs']})")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default=None,
                       help="output folder (default runs/MODEL-seedS)")
    train.add_argument("--batch-size", type=int, default=None,
                       help=f"default {defaults['batch_size']}")
    train.add_argument("--lr", type=float, default=None, help="peak learning rate")
    train.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    train.add_argument("--schedule", choices=SCHEDULES, default=None)
    train.add_argument("--weight-decay", type=float, default=None)
    train.add_argument("--sampler", choices=["stnlib", "torch"], default="stnlib")
    train.add_argument("--transform", default="affine",
                       help="family of warps of the ST-CNN: affine, translation, "
                            "translation_scale, rotation, similarity")
    train.add_argument("--subset", type=int, default=None,
                       help="train on the first N training images")
    train.add_argument("--test-subset", type=int, default=None,
                       help="test on the first N test images")
    train.add_argument("--resume", action="store_true",
                       help="continue DIR/checkpoint.pt (a finished run returns at once)")
    train.add_argument("--fast", action="store_true",
                       help="a seconds-long run on a small subset (also STNLIB_FAST=1)")
    train.add_argument("--threads", type=int, default=None, help="torch threads")
    train.add_argument("--data", default=None, help="MNIST root (default: see stnlib.data)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    train.set_defaults(func=_cli_errors(_train_command))

    ev = subparsers.add_parser(
        "eval", help="test accuracy of a checkpoint (optionally on rotated digits), as JSON")
    ev.add_argument("checkpoint", help="a checkpoint.pt written by `train`")
    ev.add_argument("--rotate", type=float, default=0.0,
                    help="rotate the test digits by DEG degrees")
    ev.add_argument("--scale", type=float, default=1.0, help="scale the test digits")
    ev.add_argument("--subset", type=int, default=None, help="first N test images")
    ev.add_argument("--batch-size", type=int, default=1000)
    ev.add_argument("--sampler", choices=["stnlib", "torch"], default=None,
                    help="override the model's sampler")
    ev.add_argument("--data", default=None, help="MNIST root")
    ev.set_defaults(func=_cli_errors(_eval_command))


def _cli_errors(command: Callable[[argparse.Namespace], int]):
    """Print expected failures (bad path, missing MNIST, ...) as one line, exit status 2."""

    def run(args: argparse.Namespace) -> int:
        import sys

        from stnlib.checkpoint import CheckpointError
        from stnlib.data import MNISTCorruptError, MNISTNotFoundError

        try:
            return command(args)
        except (ValueError, TypeError, FileNotFoundError, CheckpointError, MNISTNotFoundError,
                MNISTCorruptError, TrainingDivergedError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    return run


def _train_command(args: argparse.Namespace) -> int:
    out = Path(args.out or f"runs/{args.model}-seed{args.seed}")
    overrides = {k: v for k, v in dict(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
        schedule=args.schedule, weight_decay=args.weight_decay, train_subset=args.subset,
        test_subset=args.test_subset, threads=args.threads).items() if v is not None}
    if args.optimizer and args.lr is None:
        overrides["lr"] = DEFAULT_LR[args.optimizer]
    from stnlib.models import build_model

    model = build_model(args.model, seed=args.seed, sampler=args.sampler,
                        transform=args.transform)
    start = time.perf_counter()
    model, history = train_model(model, fast=True if args.fast else None, seed=args.seed,
                                 root=args.data, progress=not args.no_progress,
                                 checkpoint=out / "checkpoint.pt", resume=args.resume,
                                 **overrides)
    record = {"model": args.model, "epochs": len(history.epoch), "seed": args.seed,
              "test_acc": history.final_test_acc, "train_s": round(history.train_s, 2),
              "wall_s": round(time.perf_counter() - start, 2),
              "sampler": args.sampler if args.model == "stcnn" else None,
              "checkpoint": str(out / "checkpoint.pt")}
    atomic_write_text(json.dumps(history.to_dict(), indent=1) + "\n", out / "history.json")
    atomic_write_text(json.dumps(record, indent=1) + "\n", out / "metrics.json")
    print(json.dumps(record), flush=True)
    return 0


def _eval_command(args: argparse.Namespace) -> int:
    from stnlib.checkpoint import load_checkpoint, read_checkpoint
    from stnlib.data import mnist, transformed

    overrides = {"sampler": args.sampler} if args.sampler else {}
    model = load_checkpoint(args.checkpoint, **overrides)
    test_set = mnist(False, args.data)
    if args.subset:
        test_set = test_set.subset(args.subset)
    if args.rotate or args.scale != 1.0:
        test_set = transformed(test_set, degrees=args.rotate, scale=args.scale)
    accuracy = evaluate(model, test_set, args.batch_size)
    record = {"checkpoint": str(args.checkpoint),
              "model": read_checkpoint(args.checkpoint)["model_class"],
              "rotate": args.rotate, "scale": args.scale, "n": len(test_set),
              "test_acc": accuracy}
    print(json.dumps(record), flush=True)
    return 0


def rotation_sweep(models: dict[str, nn.Module], test_set: ImageSet, degrees,
                   batch_size: int = 1000, sampler: str = "stnlib") -> dict[str, list[float]]:
    """Accuracy of each model on ``test_set`` rotated by each angle in ``degrees``.

    Returns ``{name: [accuracy per angle]}``, ready for
    :func:`stnlib.viz.accuracy_vs_rotation_figure`. Rotation as :func:`stnlib.data.rotate`.
    """
    from stnlib.data import transformed

    result: dict[str, list[float]] = {name: [] for name in models}
    for angle in degrees:
        rotated = transformed(test_set, degrees=float(angle), sampler=sampler)
        for name, model in models.items():
            result[name].append(evaluate(model, rotated, batch_size))
    return result

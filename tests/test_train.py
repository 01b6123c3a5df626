"""fit / evaluate: learning, determinism, resume == uninterrupted, NaN guard, 3D, settings."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from stnlib.checkpoint import CheckpointError
from stnlib.data import ImageSet, RandomAffine
from stnlib.models import CNN, STCNN
from stnlib.train import (
    CPU_KNOBS,
    CPU_PROFILES,
    History,
    TrainingDivergedError,
    describe_transform,
    evaluate,
    fit,
    lr_at,
    machine,
    predict,
    profile_environment,
    train_model,
    training_settings,
)


def blobs(n: int = 256, size: int = 16, seed: int = 0) -> ImageSet:
    """4 classes: a bright 5x5 square in one of the four quadrants, on faint noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = 0.1 * torch.rand(n, 1, size, size, generator=gen)
    half = size // 2
    for i, label in enumerate(labels.tolist()):
        top, left = (label // 2) * half + 1, (label % 2) * half + 1
        images[i, 0, top:top + 5, left:left + 5] = 1.0
    return ImageSet(images, labels)


def tiny_cnn(seed: int = 0, size: int = 16) -> CNN:
    return CNN(num_classes=4, input_size=(size, size), channels=(4, 8), hidden=16, seed=seed)


def tiny_stcnn(seed: int = 0) -> STCNN:
    return STCNN(num_classes=4, input_size=(20, 20), channels=(4, 8), hidden=16,
                 sampler="torch", seed=seed)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in
               zip(a.state_dict().values(), b.state_dict().values(), strict=True))


FIT = dict(epochs=3, batch_size=32, progress=False, lr=1e-2, threads=1)


def test_tiny_training_lowers_the_loss_and_learns():
    train, test = blobs(256), blobs(64, seed=1)
    model = tiny_cnn()
    before = evaluate(model, test)
    history = fit(model, train, test, **FIT)
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert history.test_acc[-1] > 0.9 > before
    assert history.completed and history.steps == 3 * (256 // 32) and len(history.epoch) == 3
    json.dumps(history.to_dict())  # JSON-serialisable
    assert History.from_dict(history.to_dict()) == history
    assert not model.training  # fit leaves the model in eval mode


def test_stcnn_trains_through_fit():
    model = tiny_stcnn()
    history = fit(model, blobs(128, size=20), **{**FIT, "epochs": 2})
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.test_acc == [None, None]


def test_same_seed_same_weights_and_global_rng_untouched():
    train = blobs(128)
    state = torch.get_rng_state()
    runs = []
    for seed in (0, 0, 1):
        model = nn.Sequential(tiny_cnn(), nn.Dropout(0.3))  # dropout draws random numbers
        fit(model, train, seed=seed, train_transform=RandomAffine(degrees=(-10, 10),
                                                                  sampler="torch"), **FIT)
        runs.append(model)
    assert torch.equal(torch.get_rng_state(), state)
    assert same_weights(runs[0], runs[1])
    assert not same_weights(runs[0], runs[2])


def test_machine_names_the_cpu_a_seed_s_result_depends_on(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                       "model name\t: Intel(R)  Xeon(R) CPU @ 2.20GHz\nflags\t: avx2\n")
    here = torch.backends.cpu.get_cpu_capability()
    assert machine(cpuinfo) == {"cpu": "Intel(R) Xeon(R) CPU @ 2.20GHz", "cpu_capability": here}
    cpuinfo.write_text("processor\t: 0\nHardware\t: BCM2835\n")  # a Raspberry Pi
    assert machine(cpuinfo)["cpu"] == "BCM2835"
    for unreadable in (tmp_path / "missing", tmp_path):  # no file; a folder
        found = machine(unreadable)
        assert found["cpu"] and found["cpu"] != "BCM2835" and found["cpu_capability"] == here
    json.dumps(machine())


def test_machine_names_the_cpu_limits_that_are_set(monkeypatch):
    for knob in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS"):
        monkeypatch.delenv(knob, raising=False)
    assert "cpu_limits" not in machine()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert machine()["cpu_limits"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_cpu_profiles_set_only_the_cpu_knobs():
    assert CPU_PROFILES["native"] == {}
    for profile in ("avx2", "scalar"):
        assert CPU_PROFILES[profile] and set(CPU_PROFILES[profile]) <= set(CPU_KNOBS)
    assert CPU_PROFILES["avx2"]["ATEN_CPU_CAPABILITY"] == "avx2"


def test_profile_environment_replaces_the_knobs_and_keeps_the_rest(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")  # this process's: not passed on
    monkeypatch.setenv("STNLIB_SOMETHING", "kept")
    native = profile_environment("native")
    assert "ATEN_CPU_CAPABILITY" not in native and native["STNLIB_SOMETHING"] == "kept"
    avx2 = profile_environment("avx2")
    assert {k: avx2[k] for k in CPU_PROFILES["avx2"]} == CPU_PROFILES["avx2"]
    assert avx2["STNLIB_SOMETHING"] == "kept"


@pytest.mark.parametrize("stop", [5, 8, 13])  # mid-epoch, at an epoch end, mid-epoch
def test_resume_equals_uninterrupted(tmp_path, stop):
    train, test = blobs(160), blobs(32, seed=1)
    aug = RandomAffine(degrees=(-15, 15), sampler="torch")
    settings = dict(FIT, batch_size=20, train_transform=aug)
    full = nn.Sequential(tiny_cnn(), nn.Dropout(0.2))
    expected = fit(full, train, test, **settings)

    path = tmp_path / "run.pt"
    part = nn.Sequential(tiny_cnn(), nn.Dropout(0.2))
    stopped = fit(part, train, test, checkpoint=path, max_steps=stop, **settings)
    assert not stopped.completed and stopped.steps == stop
    resumed_model = nn.Sequential(tiny_cnn(seed=99), nn.Dropout(0.2))  # weights come from disk
    resumed = fit(resumed_model, train, test, checkpoint=path, resume=True, **settings)
    assert same_weights(resumed_model, full)
    assert resumed.train_loss == pytest.approx(expected.train_loss, rel=1e-6)
    assert resumed.test_acc == expected.test_acc and resumed.completed
    # the history says where the run was resumed, on which CPU
    assert [seg["from_step"] for seg in expected.segments] == [0]
    assert [seg["from_step"] for seg in resumed.segments] == [0, stop]
    assert all(seg["cpu_capability"] == machine()["cpu_capability"] for seg in resumed.segments)
    assert resumed.trained_on() == {k: v for k, v in resumed.segments[1].items()
                                    if k != "from_step"}
    assert History().trained_on() == machine()  # a checkpoint from before segments
    # a finished run resumes to itself at once
    again = fit(nn.Sequential(tiny_cnn(), nn.Dropout(0.2)), train, test, checkpoint=path,
                resume=True, **settings)
    assert again.train_loss == resumed.train_loss
    assert again.segments == resumed.segments  # a finished run adds no segment


class _Ramp:
    """A curriculum transform: shifts images by more pixels as training goes on."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def set_progress(self, step: int, total_steps: int) -> None:
        self.seen.append((step, total_steps))

    def __call__(self, images, generator):
        step, total = self.seen[-1]
        return torch.roll(images, 3 * step // total, dims=-1)

    def __repr__(self) -> str:
        return "_Ramp()"


def test_fit_tells_a_curriculum_transform_the_step_and_resume_continues_it(tmp_path):
    train = blobs(96)
    settings = dict(FIT, batch_size=32)  # 3 steps per epoch, 9 in all
    ramp, full = _Ramp(), tiny_cnn()
    fit(full, train, train_transform=ramp, **settings)
    assert ramp.seen == [(step, 9) for step in range(9)]
    path, first, second = tmp_path / "run.pt", _Ramp(), _Ramp()
    fit(tiny_cnn(), train, checkpoint=path, max_steps=4, train_transform=first, **settings)
    resumed = tiny_cnn(seed=5)
    fit(resumed, train, checkpoint=path, resume=True, train_transform=second, **settings)
    assert first.seen + second.seen == ramp.seen  # the new process starts at step 4
    assert same_weights(resumed, full)


def test_resume_with_a_new_but_equal_transform(tmp_path):
    """A resumed run builds its transform afresh (a new process: new object, new address):
    an equal one resumes, one with other settings is refused."""

    def make_shift(pixels):  # a plain closure: its repr carries a memory address
        def shift(images, generator):
            return torch.roll(images, pixels, dims=-1)
        return shift

    train, path = blobs(64), tmp_path / "run.pt"
    fit(tiny_cnn(), train, checkpoint=path, max_steps=2, train_transform=make_shift(1), **FIT)
    resumed = fit(tiny_cnn(), train, checkpoint=path, resume=True,
                  train_transform=make_shift(1), **FIT)
    assert resumed.completed
    other = tmp_path / "other.pt"
    fit(tiny_cnn(), train, checkpoint=other, max_steps=2,
        train_transform=RandomAffine(degrees=(-10, 10)), **FIT)
    with pytest.raises(ValueError, match="different settings.*train_transform"):
        fit(tiny_cnn(), train, checkpoint=other, resume=True,
            train_transform=RandomAffine(degrees=(-20, 20)), **FIT)
    assert describe_transform(make_shift(1)) == describe_transform(make_shift(2))
    assert "0x" not in describe_transform(make_shift(1))


def test_checkpoint_every_and_safe_overwrite_rules(tmp_path):
    train = blobs(64)
    path = tmp_path / "c.pt"
    fit(tiny_cnn(), train, checkpoint=path, checkpoint_every=1, max_steps=3, **FIT)
    with pytest.raises(ValueError, match="already exists: pass resume=True"):
        fit(tiny_cnn(), train, checkpoint=path, **FIT)
    with pytest.raises(ValueError, match="different settings.*batch_size"):
        fit(tiny_cnn(), train, checkpoint=path, resume=True, **{**FIT, "batch_size": 16})
    with pytest.raises(CheckpointError, match="holds a stnlib.models:CNN model.*STCNN"):
        fit(tiny_stcnn(), blobs(64, size=20), checkpoint=path, resume=True, **FIT)


def test_fit_refuses_a_checkpoint_another_run_is_training_into(tmp_path):
    from stnlib.checkpoint import CheckpointInUseError, checkpoint_lock

    train, path = blobs(64), tmp_path / "c.pt"
    fit(tiny_cnn(), train, checkpoint=path, max_steps=2, **FIT)
    before = path.read_bytes()
    with checkpoint_lock(path):  # another run holds it
        with pytest.raises(CheckpointInUseError, match="c.pt is being trained into"):
            fit(tiny_cnn(), train, checkpoint=path, resume=True, **FIT)
    assert path.read_bytes() == before  # neither resumed nor overwritten
    assert not (tmp_path / "c.pt.lock").exists()
    history = fit(tiny_cnn(), train, checkpoint=path, resume=True, **FIT)  # free: resumes
    assert history.completed and not (tmp_path / "c.pt.lock").exists()


def test_nan_guard_names_the_step_and_the_fix():
    def poison(images, generator):
        poison.calls += 1
        if poison.calls == 3:
            images[0, 0, 0, 0] = float("nan")
        return images

    poison.calls = 0
    with pytest.raises(TrainingDivergedError, match=r"step 3 .*input batch.*Fix"):
        fit(tiny_cnn(), blobs(128), train_transform=poison, **FIT)


def test_nan_guard_on_diverging_learning_rate():
    with pytest.raises(TrainingDivergedError, match=r"lower the learning rate"):
        fit(tiny_cnn(), blobs(128), **{**FIT, "lr": 1e12, "optimizer": "sgd",
                                       "schedule": "constant"})


def test_fit_trains_a_3d_model():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 2
    volumes = torch.rand(64, 1, 6, 6, 6, generator=gen) * 0.1
    volumes[labels == 1, :, :3] += 0.9
    model = nn.Sequential(nn.Conv3d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 2))
    history = fit(model, ImageSet(volumes, labels), ImageSet(volumes, labels),
                  **{**FIT, "batch_size": 8})
    assert history.test_acc[-1] == 1.0


def test_evaluate_restores_mode_and_counts_right():
    class Fixed(nn.Module):  # always predicts class 1
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.tensor([0.0, 1.0]).expand(len(x), 2) + self.w

    data = ImageSet(torch.zeros(10, 4, 4), torch.tensor([1] * 7 + [0] * 3))
    model = Fixed().train()
    assert evaluate(model, data, batch_size=3) == pytest.approx(0.7)
    assert model.training
    predictions = predict(model, data, batch_size=4)
    assert predictions.dtype == torch.long and predictions.tolist() == [1] * 10
    assert model.training
    empty = ImageSet(torch.zeros(0, 4, 4), torch.zeros(0, dtype=torch.long))
    assert predict(model, empty).shape == (0,)
    with pytest.raises(TypeError, match="image_set must be a stnlib.data.ImageSet"):
        predict(model, torch.zeros(3, 4, 4))


def test_bad_arguments_are_clear():
    with pytest.raises(TypeError, match="train_set must be a stnlib.data.ImageSet"):
        fit(tiny_cnn(), torch.zeros(3), epochs=1)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        fit(tiny_cnn(), blobs(8), epochs=1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        fit(tiny_cnn(), blobs(8), epochs=0)
    for lr in (0.0, -1e-3, float("nan"), float("inf"), "0.01"):
        with pytest.raises(ValueError, match="lr must be a positive finite number"):
            fit(tiny_cnn(), blobs(8), epochs=1, lr=lr)
    for smoothing in (-0.1, 1.0, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match=r"label_smoothing must be a number in \[0, 1\)"):
            fit(tiny_cnn(), blobs(8), epochs=1, label_smoothing=smoothing)


def test_schedules():
    assert lr_at(0, 100, 1.0, "onecycle") == pytest.approx(0.04)
    assert lr_at(25, 100, 1.0, "onecycle") == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, "onecycle") == pytest.approx(1e-4)
    assert [lr_at(s, 100, 1.0, "step") for s in (0, 50, 80)] == pytest.approx([1, 0.1, 0.01])
    assert lr_at(7, 100, 0.3, "constant") == 0.3


def test_fast_settings_shrink_the_same_run():
    full, fast = training_settings(fast=False), training_settings(fast=True)
    assert fast["epochs"] < full["epochs"] and fast["train_subset"] < 60_000
    assert full["train_subset"] is None and set(full) == set(fast)


def test_train_model_fast_on_mnist(mnist):
    train, test = mnist
    model, history = train_model("stcnn", fast=True, sampler="torch", progress=False,
                                 train_set=train.subset(512), test_set=test.subset(256),
                                 epochs=1, batch_size=64)
    assert history.completed and history.train_loss[0] < 2.3 and 0 <= history.test_acc[0] <= 1


def test_param_groups_scale_by_submodule_longest_key_wins():
    from stnlib.train import param_groups

    model = tiny_stcnn()
    groups = param_groups(model, {"transformer": 0.5, "transformer.localization.head": 0.1})
    by_scale = {g["lr_scale"]: {id(p) for p in g["params"]} for g in groups}
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[i] for i in by_scale[0.1]} == {n for n in names.values()
                                                  if n.startswith("transformer.localization.head.")}
    assert all(names[i].startswith("transformer.localization.features.") for i in by_scale[0.5])
    assert all(names[i].startswith("classifier.") for i in by_scale[1.0])
    assert sum(len(g["params"]) for g in groups) == len(names)
    assert [g["lr_scale"] for g in param_groups(model)] == [1.0]  # one group, as before


def test_lr_scales_scale_the_step_of_their_submodule_only():
    """Adam's first step moves every weight with a gradient by about lr: a tenth of that
    under a scale of 0.1. With 'transformer' scaled, the classifier's steps are unchanged."""
    train = blobs(64, size=20)
    model, before = tiny_stcnn(), tiny_stcnn()
    fit(model, train, epochs=1, batch_size=64, lr=1e-2, schedule="constant", progress=False,
        lr_scales={"transformer": 0.1}, threads=1)
    steps = {n: (p - q).abs().max().item() for (n, p), q in
             zip(model.named_parameters(), before.parameters(), strict=True)}
    head = steps["transformer.localization.head.3.bias"]
    assert head == pytest.approx(1e-3, rel=1e-2)
    assert max(v for n, v in steps.items() if n.startswith("transformer.")) < 1.01e-3
    assert max(v for n, v in steps.items() if n.startswith("classifier.")) == pytest.approx(
        1e-2, rel=1e-2)


def test_lr_scales_bad_input_and_resume_rules(tmp_path):
    train, path = blobs(64, size=20), tmp_path / "run.pt"
    with pytest.raises(ValueError, match="'localisation' names no trainable parameter.*"
                                         "classifier, transformer"):
        fit(tiny_stcnn(), train, lr_scales={"localisation": 0.1}, **FIT)
    for bad in (0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match=r"lr_scales\['transformer'\] must be a positive"):
            fit(tiny_stcnn(), train, lr_scales={"transformer": bad}, **FIT)
    with pytest.raises(TypeError, match="lr_scales must be a dict"):
        fit(tiny_stcnn(), train, lr_scales=[("transformer", 0.1)], **FIT)
    fit(tiny_stcnn(), train, checkpoint=path, max_steps=2, lr_scales={"transformer": 0.1},
        **FIT)
    with pytest.raises(ValueError, match="different settings.*lr_scales"):
        fit(tiny_stcnn(), train, checkpoint=path, resume=True, **FIT)
    resumed = fit(tiny_stcnn(), train, checkpoint=path, resume=True,
                  lr_scales={"transformer": 0.1}, **FIT)
    assert resumed.completed

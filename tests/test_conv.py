"""stnlib.conv: a one-channel convolution whose input gradient is a matrix product and a
fold; the same forward as nn.Conv2d, the same gradients to float rounding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stnlib.conv import FoldGradConv2d, conv2d_fold_grad, fold_grad_applies

SHAPES = [  # (out channels, kernel, stride, padding, dilation, input side)
    (32, 9, 1, 0, 1, 28), (32, 9, 1, 4, 1, 28), (20, 5, 2, 1, 1, 42), (8, 3, 1, 2, 2, 13),
    (4, (3, 5), (1, 2), (0, 1), 1, 17),
]


@pytest.mark.parametrize("out, kernel, stride, padding, dilation, side", SHAPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_forward_and_gradients_match_nn_conv2d(out, kernel, stride, padding, dilation, side,
                                               channels_last):
    torch.manual_seed(0)
    plain = nn.Conv2d(1, out, kernel, stride, padding, dilation)
    fold = FoldGradConv2d(1, out, kernel, stride, padding, dilation)
    fold.load_state_dict(plain.state_dict())
    x = torch.rand(6, 1, side, side)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        plain, fold = (m.to(memory_format=torch.channels_last) for m in (plain, fold))
    results, weights = [], None
    for model in (plain, fold):
        image = x.clone().requires_grad_(True)
        y = model(image)
        weights = torch.randn_like(y) if weights is None else weights  # one loss for both
        (y * weights).sum().backward()
        results.append((y, image.grad, model.weight.grad, model.bias.grad))
    for a, b in zip(*results, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert torch.equal(results[0][0], results[1][0])  # the forward is F.conv2d itself


def test_gradcheck_float64():
    torch.manual_seed(1)
    x = torch.rand(2, 1, 9, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: conv2d_fold_grad(x, w, b, stride=(2, 1), padding=(1, 2), dilation=1),
        (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w: conv2d_fold_grad(x, w, None, padding=1),
                                    (x, w))


def test_only_what_is_asked_for_is_computed():
    x = torch.rand(2, 1, 10, 10, requires_grad=True)
    w = torch.randn(4, 1, 3, 3)  # a frozen weight: no weight gradient
    conv2d_fold_grad(x, w, None).sum().backward()
    torch.testing.assert_close(x.grad, torch.nn.grad.conv2d_input(x.shape, w,
                                                                  torch.ones(2, 4, 8, 8)))


def test_where_the_fold_path_applies():
    w1, w3 = torch.randn(4, 1, 3, 3), torch.randn(4, 3, 3, 3)
    needs = torch.rand(2, 1, 8, 8, requires_grad=True)
    assert fold_grad_applies(needs, w1)
    assert not fold_grad_applies(needs.detach(), w1)  # data, no input gradient wanted
    assert not fold_grad_applies(torch.rand(2, 3, 8, 8, requires_grad=True), w3)
    with torch.no_grad():
        assert not fold_grad_applies(needs, w1)
    # elsewhere it is F.conv2d, many channels and groups included
    x3 = torch.rand(2, 3, 8, 8, requires_grad=True)
    assert torch.equal(conv2d_fold_grad(x3, w3), F.conv2d(x3, w3))
    wg = torch.randn(6, 1, 3, 3)
    assert torch.equal(conv2d_fold_grad(x3, wg, groups=3), F.conv2d(x3, wg, groups=3))


def test_string_padding_is_refused_and_modules_fall_back():
    with pytest.raises(ValueError, match="padding='same': conv2d_fold_grad takes padding in "
                                         "pixels"):
        conv2d_fold_grad(torch.rand(1, 1, 5, 5), torch.randn(2, 1, 3, 3), padding="same")
    same = FoldGradConv2d(1, 2, 3, padding="same")  # the module hands it to nn.Conv2d
    x = torch.rand(1, 1, 5, 5, requires_grad=True)
    assert same(x).shape == (1, 2, 5, 5)
    reflect = FoldGradConv2d(1, 2, 3, padding=1, padding_mode="reflect")
    assert torch.equal(reflect(x), nn.Conv2d.forward(reflect, x))

"""stnlib.conv: a one-channel convolution whose input gradient is a matrix product and a
fold; the same forward as nn.Conv2d, the same gradients to float rounding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stnlib.conv import (
    FoldGradConv2d,
    conv2d_fold_grad,
    fold_grad_applies,
    input_grad,
    overlap_add,
)

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



@pytest.mark.parametrize("out, kernel, stride, padding, dilation, side", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_overlap_add_is_torch_fold(out, kernel, stride, padding, dilation, side, dtype):
    # the oracle: F.fold (col2im) of columns in F.unfold's layout; a non-square image
    torch.manual_seed(2)
    size = (side, side + 1)
    blocks = F.unfold(torch.zeros(3, 1, *size), kernel, dilation, padding, stride)
    columns = torch.randn(blocks.shape, dtype=dtype)
    expected = F.fold(columns, size, kernel, dilation, padding, stride)
    got = overlap_add(columns, size, kernel, dilation, padding, stride)
    assert got.shape == expected.shape == (3, 1, *size) and got.dtype == dtype
    assert got.is_contiguous()
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance)
    # input_grad, the gradient of a one-channel convolution: either fold, and torch's own
    weight = torch.randn(out, 1, *_pair(kernel), dtype=dtype)
    out_size = F.conv2d(torch.zeros(1, 1, *size, dtype=dtype), weight, None, stride, padding,
                        dilation).shape[-2:]
    grad_output = torch.randn(3, out, *out_size, dtype=dtype)
    conv = [_pair(value) for value in (stride, padding, dilation)]
    ours = input_grad(grad_output, weight, size, *conv)
    torch.testing.assert_close(ours, input_grad(grad_output, weight, size, *conv, fold=F.fold),
                               rtol=tolerance, atol=tolerance)
    native = torch.nn.grad.conv2d_input((3, 1, *size), weight, grad_output, stride, padding,
                                        dilation)  # sums of up to C_out*k*k terms: scaled
    torch.testing.assert_close(ours, native, rtol=tolerance,
                               atol=tolerance * float(native.abs().max()))


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def test_overlap_add_refuses_columns_of_another_shape():
    # a 3x3 kernel over 8x8 slides to 6x6 = 36 positions
    with pytest.raises(ValueError, match=r"columns of shape \(2, 9, 30\) do not fit a 3x3 "
                                         r"kernel sliding over 8x8 .*expected \(B, 9, 36\)"):
        overlap_add(torch.zeros(2, 9, 30), (8, 8), 3)
    with pytest.raises(ValueError, match=r"expected \(B, 9, 36\)"):
        overlap_add(torch.zeros(2, 18, 36), (8, 8), 3)  # two channels' columns

"""A one-channel convolution whose input gradient is a matrix product and a fold.

Behind a spatial transformer the classifier's first convolution needs the gradient with
respect to its *input* (it flows on through the sampler to theta). For a convolution with
one input channel, the usual CPU kernel (oneDNN) computes that gradient several times
slower than the layer's forward pass and weight gradient together: about 24 ms of a 52 ms
training step of the Table 1 affine ST-CNN on R (batch 64, one thread, AMD EPYC). The same
gradient is one matrix product and a fold (col2im, an overlap-add)::

    grad_input = fold(W^T @ grad_output)    W: (C_out, k*k), grad_output: (B, C_out, L)

:class:`FoldGradConv2d` is an ``nn.Conv2d`` whose backward does that when it has one input
channel (and ``groups=1``); its forward is ``F.conv2d`` unchanged, so a model computes
exactly what it did, and its gradients agree with ``nn.Conv2d``'s to float rounding (a
different order of the same sums). With more input channels the product is slower than
the usual kernel, and the layer is a plain ``nn.Conv2d``.

The fold is :func:`overlap_add`. Torch's ``F.fold`` gives the same result but runs on one
thread, whatever torch is given; :func:`overlap_add` adds the k*k shifted planes of the
columns in two passes, first along rows and then along columns (k_w + k_h slice additions
on the whole batch), the same sums in torch's threaded elementwise kernels. For the
Table 1 classifier at batch 64 with two threads (a 2-core Intel Xeon) the whole input
gradient takes 4.0 ms against 11.9 with ``F.fold`` and 14.0 with oneDNN's kernel; with
one thread the two folds take about as long, 11.9 and 12.1 ms (``python -m stnlib bench
conv`` times the three side by side; ``results/overlap-add/``). A two-thread training step
of an ST-CNN takes 0.855 to 0.895 of the time it took with ``F.fold``
(``benchmarks/cell_speed.py``, profile ``+torchfold``).

``python -m stnlib paper --conv-grad fold`` builds the Table 1 models with it
(``benchmarks/cell_speed.py`` measures what it saves in a training step).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["FoldGradConv2d", "conv2d_fold_grad", "fold_grad_applies", "input_grad",
           "overlap_add"]


class _FoldGradConv2d(torch.autograd.Function):
    """``F.conv2d(input, weight, bias, stride, padding, dilation)`` for one input channel,
    with the input gradient computed as ``fold(W^T @ grad_output)``."""

    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                stride: tuple[int, int], padding: tuple[int, int],
                dilation: tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(input, weight)
        ctx.conv = (stride, padding, dilation, bias is not None)
        return F.conv2d(input, weight, bias, stride, padding, dilation)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor):
        input, weight = ctx.saved_tensors
        stride, padding, dilation, has_bias = ctx.conv
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_input = grad_weight = grad_bias = None
        if need_input:
            grad_input = input_grad(grad_output, weight, input.shape[-2:], stride, padding,
                                    dilation)
        if need_weight or (need_bias and has_bias):
            _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad_output, input, weight, [weight.shape[0]] if has_bias else None,
                list(stride), list(padding), list(dilation), False, [0, 0], 1,
                [False, bool(need_weight), bool(need_bias and has_bias)])
        return grad_input, grad_weight, grad_bias, None, None, None


def overlap_add(columns: torch.Tensor, output_size: int | tuple[int, int],
                kernel_size: int | tuple[int, int], dilation: int | tuple[int, int] = 1,
                padding: int | tuple[int, int] = 0, stride: int | tuple[int, int] = 1
                ) -> torch.Tensor:
    """``F.fold`` for one channel: sum each kernel offset's plane of ``columns`` into the
    image at that offset (col2im), as k_w + k_h slice additions on the whole batch.

    Args:
        columns: (B, kH*kW, L), L = H_out * W_out sliding positions (as ``F.unfold`` makes
            them for a (B, 1, H, W) image, and as ``F.fold`` takes them).
        output_size: (H, W) of the image; kernel_size, dilation, padding, stride: ints
            or pairs, as ``F.fold`` takes them.

    Returns:
        (B, 1, H, W): ``F.fold(columns, output_size, kernel_size, dilation, padding,
        stride)`` to float rounding (the same sums, added in another order).
    """
    (height, width), (kh, kw) = _pair(output_size), _pair(kernel_size)
    (dh, dw), (ph, pw), (sh, sw) = _pair(dilation), _pair(padding), _pair(stride)
    batch = columns.shape[0]
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if columns.shape[1:] != (kh * kw, out_h * out_w):
        raise ValueError(f"columns of shape {tuple(columns.shape)} do not fit a {kh}x{kw} "
                         f"kernel sliding over {height}x{width} (dilation {dilation}, "
                         f"padding {padding}, stride {stride}): expected "
                         f"(B, {kh * kw}, {out_h * out_w})")
    planes = columns.reshape(batch, kh, kw, out_h, out_w)
    # pass 1: each kernel row's k_w planes, shifted along the padded width, summed
    rows = columns.new_zeros(batch, kh, out_h, width + 2 * pw)
    for j in range(kw):
        rows[..., j * dw:j * dw + sw * (out_w - 1) + 1:sw] += planes[:, :, j]
    # pass 2: the k_h row sums, shifted along the padded height, summed
    image = columns.new_zeros(batch, height + 2 * ph, width + 2 * pw)
    for i in range(kh):
        image[:, i * dh:i * dh + sh * (out_h - 1) + 1:sh] += rows[:, i]
    return image[:, ph:ph + height, pw:pw + width].unsqueeze(1).contiguous()


def input_grad(grad_output: torch.Tensor, weight: torch.Tensor, input_size: tuple[int, int],
               stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0),
               dilation: tuple[int, int] = (1, 1),
               fold: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
    """The gradient of a one-input-channel ``F.conv2d`` with respect to its input:
    ``fold(W^T @ grad_output)``.

    Args:
        grad_output: (B, C_out, H_out, W_out); weight: (C_out, 1, kH, kW).
        input_size: (H, W) of the convolution's input; stride, padding, dilation: pairs.
        fold: the col2im, called as ``F.fold`` is (default :func:`overlap_add`; ``F.fold``
            gives the same to float rounding, more slowly: ``python -m stnlib bench conv``).

    Returns:
        (B, 1, H, W).
    """
    batch, out_channels = grad_output.shape[:2]
    # one (k*k, C_out) @ (C_out, L) product per image, written as (B, k*k, L)
    columns = torch.bmm(weight.reshape(out_channels, -1).t().expand(batch, -1, -1),
                        grad_output.reshape(batch, out_channels, -1))
    return (fold or overlap_add)(columns, tuple(input_size), tuple(weight.shape[-2:]),
                                 dilation=dilation, padding=padding, stride=stride)


def fold_grad_applies(input: torch.Tensor, weight: torch.Tensor, groups: int = 1) -> bool:
    """Whether :func:`conv2d_fold_grad` takes the fold path: a 4D input with one channel,
    ``groups=1``, and a gradient to compute with respect to the input."""
    return (input.dim() == 4 and input.shape[1] == 1 and weight.shape[1] == 1 and groups == 1
            and input.requires_grad and torch.is_grad_enabled())


def conv2d_fold_grad(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                     dilation: int | tuple[int, int] = 1, groups: int = 1) -> torch.Tensor:
    """``F.conv2d`` with the same arguments and result; its input gradient is computed as
    ``fold(W^T @ grad_output)`` where :func:`fold_grad_applies` (else it *is* ``F.conv2d``).

    Args:
        input: (B, 1, H, W); weight: (C_out, 1, kH, kW); bias: (C_out,) or None.
        stride, padding, dilation: ints or pairs of ints (a string padding such as
            ``"same"`` is not supported here: give the pixels).

    Returns:
        (B, C_out, H_out, W_out), as ``F.conv2d``.
    """
    if isinstance(padding, str):
        raise ValueError(f"padding={padding!r}: conv2d_fold_grad takes padding in pixels "
                         "(an int or a pair), e.g. (k - 1) // 2 for 'same' with an odd k")
    if not fold_grad_applies(input, weight, groups):
        return F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    return _FoldGradConv2d.apply(input, weight, bias, _pair(stride), _pair(padding),
                                 _pair(dilation))


def _pair(value: int | tuple[int, ...] | torch.Size) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else tuple(map(int, value))


class FoldGradConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same arguments, parameters and forward result) whose input gradient
    is a matrix product and a fold when it has one input channel: much faster on a CPU
    (see the module's docstring). A drop-in for the first layer of a classifier behind a
    spatial transformer."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(input)
        return conv2d_fold_grad(input, self.weight, self.bias, self.stride, self.padding,
                                self.dilation, self.groups)

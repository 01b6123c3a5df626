"""A one-channel convolution whose input gradient is a matrix product and a fold.

Behind a spatial transformer the classifier's first convolution needs the gradient with
respect to its *input* (it flows on through the sampler to theta). For a convolution with
one input channel, the usual CPU kernel (oneDNN) computes that gradient several times
slower than the layer's forward pass and weight gradient together: about 24 ms of a 52 ms
training step of the Table 1 affine ST-CNN on R (batch 64, one thread, AMD EPYC). The same
gradient is one matrix product and a ``fold`` (col2im)::

    grad_input = fold(W^T @ grad_output)    W: (C_out, k*k), grad_output: (B, C_out, L)

about 4 ms there (with two threads about 10 ms against 3: torch's ``fold`` runs on one
thread, oneDNN's kernel on both). :class:`FoldGradConv2d` is an ``nn.Conv2d`` whose
backward does that when it has one input channel (and ``groups=1``); its forward is
``F.conv2d`` unchanged, so a model computes exactly what it did, and its gradients agree
with ``nn.Conv2d``'s to float rounding (a different order of the same sums). With more
input channels the fold is slower than the usual kernel, and the layer is a plain
``nn.Conv2d``.

``python -m stnlib paper --conv-grad fold`` builds the Table 1 models with it
(``benchmarks/cell_speed.py`` measures what it saves).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["FoldGradConv2d", "conv2d_fold_grad", "fold_grad_applies"]


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
            batch, out_channels = grad_output.shape[:2]
            # one (k*k, C_out) @ (C_out, L) product per image, written as (B, k*k, L)
            columns = torch.bmm(weight.reshape(out_channels, -1).t().expand(batch, -1, -1),
                                grad_output.reshape(batch, out_channels, -1))
            grad_input = F.fold(columns, input.shape[-2:], weight.shape[-2:],
                                dilation=dilation, padding=padding, stride=stride)
        if need_weight or (need_bias and has_bias):
            _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad_output, input, weight, [weight.shape[0]] if has_bias else None,
                list(stride), list(padding), list(dilation), False, [0, 0], 1,
                [False, bool(need_weight), bool(need_bias and has_bias)])
        return grad_input, grad_weight, grad_bias, None, None, None


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


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
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

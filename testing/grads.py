"""Forward and backward of a log-prob function on fresh leaf copies of its inputs."""

from __future__ import annotations

import torch


def run_with_grads(fn, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                   grad_out: torch.Tensor, train_weight: bool = True):
    """(outputs, d hidden, d weight or None) of ``fn(hidden, weight, targets)`` backpropagated
    from ``grad_out``; the inputs themselves are left untouched."""
    hidden = hidden.detach().clone().requires_grad_()
    weight = weight.detach().clone().requires_grad_(train_weight)
    out = fn(hidden, weight, targets)
    out.backward(grad_out.to(out.dtype))
    return out.detach(), hidden.grad, weight.grad

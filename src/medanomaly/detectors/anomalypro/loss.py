"""Losses of the masked one-way translation GAN.

Critic (WGAN-GP, Gulrajani et al. 2017, https://arxiv.org/abs/1704.00028)::

    L_D = E[D(G(a))] - E[D(b)] + lambda_gp * E[(||grad D(x_hat)||_2 - 1)^2],  x_hat = eps * b + (1 - eps) * G(a)

Generator::

    L_G = lambda_adv * (-E[D(G(a))])            translated A judged as a real healthy B
        + lambda_id  * |G(b) - b|_1             a healthy image must pass through unchanged
        + lambda_rec * |G(a) - a|_1             change as little of the input as needed
        + lambda_f   * focus(M)                 binary, sparse masks

``focus(M) = mean(M * (1 - M)) + sparsity * mean(M)``: the first term is 0 only at M in {0, 1} (pushes every pixel to
decide), the second prefers "off"; with ``sparsity`` > 0 the minimum over [0, 1] is at M = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from medanomaly.detectors.anomalypro.critic import PatchCriticNet


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator and critic loss terms (see the module docstring)."""

    adversarial: float = 1.0
    identity: float = 10.0
    reconstruction: float = 10.0
    focus: float = 0.5
    sparsity: float = 0.5
    gradient_penalty: float = 10.0


def gradient_penalty(critic: PatchCriticNet, real: Tensor, fake: Tensor, generator: torch.Generator) -> Tensor:
    """WGAN-GP term: mean of (||dD/dx_hat||_2 - 1)^2 at random interpolates of real and fake.

    Args:
        critic: The critic.
        real: (N, C, H, W) healthy images.
        fake: (N, C, H, W) translated images (detached).
        generator: CPU generator of the interpolation weights.

    Returns:
        Scalar penalty (differentiable with respect to the critic's parameters).
    """
    n = min(len(real), len(fake))
    eps = torch.rand(n, 1, 1, 1, generator=generator).to(real.device)
    mixed = (eps * real[:n] + (1 - eps) * fake[:n]).requires_grad_(True)
    values = critic.image_values(mixed)
    (gradients,) = torch.autograd.grad(values.sum(), mixed, create_graph=True)
    return ((gradients.flatten(1).norm(dim=1) - 1) ** 2).mean()


def focus_loss(mask: Tensor, sparsity: float) -> Tensor:
    """mean(M (1 - M)) + sparsity * mean(M) for masks (N, 1, H, W) in [0, 1]; a scalar."""
    return (mask * (1 - mask)).mean() + sparsity * mask.mean()


def l1(first: Tensor, second: Tensor) -> Tensor:
    """Mean absolute difference, a scalar."""
    return torch.abs(first - second).mean()

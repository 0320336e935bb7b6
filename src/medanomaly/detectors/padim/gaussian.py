"""Per-position multivariate Gaussians of patch embeddings and batched Mahalanobis distances (PaDiM).

Defard et al., "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and Localization", ICPR 2021,
https://arxiv.org/abs/2011.08785. Each patch position p gets a mean mu_p and covariance
Sigma_p = S_p + eps * I estimated over the normal images. The distance of an embedding x at p is
sqrt((x - mu_p)^T Sigma_p^-1 (x - mu_p)) = ||W_p (x - mu_p)||, where W_p = L_p^-1 for the Cholesky factor
Sigma_p = L_p L_p^T: one batched matrix product per batch, no explicit inverse.
"""

from __future__ import annotations

import torch
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

_CHUNK = 256  # positions per batched matrix product


class GaussianAccumulator:
    """Streaming per-position mean and covariance (float64 sums around a fixed shift, numerically stable).

    Args:
        n_positions: P, the number of patch positions.
        dim: d, the embedding dimension.
    """

    def __init__(self, n_positions: int, dim: int) -> None:
        self.count = 0
        self.shift: Tensor | None = None
        self.sum = torch.zeros(n_positions, dim, dtype=torch.float64)
        self.outer = torch.zeros(n_positions, dim, dim, dtype=torch.float64)

    def update(self, embeddings: Tensor) -> None:
        """Add a batch of (B, P, d) embeddings."""
        embeddings = embeddings.detach().cpu()
        if self.shift is None:
            self.shift = embeddings.mean(dim=0)
        centred = (embeddings - self.shift).transpose(0, 1).contiguous()  # (P, B, d); bmm is slow on odd strides
        self.sum += centred.sum(dim=1)
        for start in range(0, len(centred), _CHUNK):  # chunks of positions bound the float32 -> float64 temporaries
            part = centred[start : start + _CHUNK]
            self.outer[start : start + _CHUNK] += torch.bmm(part.transpose(1, 2), part)
        self.count += len(embeddings)

    def finalize(self, epsilon: float) -> tuple[Tensor, Tensor]:
        """(P, d) means and (P, d, d) covariances (unbiased, + epsilon * I), float64; consumes the sums in place."""
        if self.count < 2 or self.shift is None:
            msg = f"need at least 2 images to estimate covariances, got {self.count}"
            raise ValueError(msg)
        mean_shifted = self.sum / self.count
        covariance = self.outer
        covariance.baddbmm_(mean_shifted[:, :, None], mean_shifted[:, None, :], alpha=-self.count)  # in place
        covariance /= self.count - 1
        covariance.diagonal(dim1=1, dim2=2).add_(epsilon)
        self.outer = torch.empty(0)  # the sums are spent
        return mean_shifted + self.shift.double(), covariance


class GaussianModel(nn.Module):
    """Fitted Gaussians as buffers: ``mean`` (P, d) and ``whitening`` (P, d, d) = inverse Cholesky factors.

    Args:
        n_positions: P.
        dim: d.
    """

    mean: Tensor
    whitening: Tensor

    def __init__(self, n_positions: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_positions, dim))
        self.register_buffer("whitening", torch.zeros(n_positions, dim, dim))

    @torch.no_grad()
    def set(self, mean: Tensor, covariance: Tensor, chunk: int = _CHUNK) -> None:
        """Store means and the whitening transforms of (P, d, d) positive-definite covariances (float64 math).

        Positions are processed ``chunk`` at a time (bounded temporaries) on one BLAS thread: these many small
        factorisations gain nothing from threads, and lose 20x when the cores are shared.
        """
        self.mean.copy_(mean)
        identity = torch.eye(covariance.shape[-1], dtype=torch.float64)
        with threadpool_limits(limits=1):
            for start in range(0, len(covariance), chunk):
                lower = torch.linalg.cholesky(covariance[start : start + chunk].double())
                inverse = torch.linalg.solve_triangular(lower, identity.expand_as(lower), upper=False)
                self.whitening[start : start + chunk] = inverse

    def forward(self, embeddings: Tensor) -> Tensor:
        """Mahalanobis distances of (B, P, d) embeddings -> (B, P), >= 0."""
        centred = (embeddings - self.mean).permute(1, 2, 0).contiguous()  # (P, d, B); bmm is slow on odd strides
        whitened = torch.bmm(self.whitening, centred)  # (P, d, B)
        return whitened.square().sum(dim=1).sqrt().T.contiguous()

"""PatchCore's memory bank and its nearest-neighbour searches (exact, blocked matrix products).

Scoring needs, for every test patch, the distance to its nearest bank entry, and the image score is the largest of
them. Brute force over a 100k-entry bank costs hundreds of milliseconds per 224 px image on a 2-core CPU, so the
default search is *bounded*:

1. the bank is stored in greedy k-center pick order, so its first ``n_coarse`` rows are themselves a k-center
   coreset of it; each patch's distance to them is an upper bound of its true nearest-neighbour distance (they are
   bank entries);
2. in a few rounds, the patches of each image with the largest upper bounds get an exact search over the whole
   bank, until no remaining upper bound exceeds the image's largest exact distance.

The image maximum (hence the score, and the patch whose neighbours re-weight it) is therefore exact; elsewhere the
map holds the upper bounds, exact wherever the coarse level already holds the nearest entry and otherwise too high by
less than the coarse level's covering radius. ``search="exact"`` computes every patch exactly instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

_QUERY_BLOCK = 8192  # query rows per distance block
_BANK_BLOCK = 16384  # bank rows per distance block


def _squared(queries: Tensor, query_norms: Tensor, keys: Tensor, key_norms: Tensor) -> Tensor:
    """(Q, K) squared Euclidean distances by one matrix product, clipped at 0."""
    out = torch.addmm(key_norms[None, :], queries, keys.T, beta=1.0, alpha=-2.0)
    return out.add_(query_norms[:, None]).clamp_(min=0.0)


def nearest(queries: Tensor, keys: Tensor, key_norms: Tensor | None = None, k: int = 1) -> tuple[Tensor, Tensor]:
    """Exact k nearest neighbours by blocked matrix products.

    Args:
        queries: (Q, D) float32.
        keys: (K, D) float32.
        key_norms: (K,) squared norms of ``keys`` (computed if None).
        k: Neighbours per query (clipped to K).

    Returns:
        (Q, k) distances (ascending) and (Q, k) indices into ``keys``.
    """
    key_norms = (keys * keys).sum(dim=1) if key_norms is None else key_norms
    k = min(k, len(keys))
    out_d = torch.empty(len(queries), k, device=queries.device)
    out_i = torch.empty(len(queries), k, dtype=torch.long, device=queries.device)
    for q0 in range(0, len(queries), _QUERY_BLOCK):
        block = queries[q0 : q0 + _QUERY_BLOCK]
        norms = (block * block).sum(dim=1)
        best_d = best_i = None
        for k0 in range(0, len(keys), _BANK_BLOCK):
            squared = _squared(block, norms, keys[k0 : k0 + _BANK_BLOCK], key_norms[k0 : k0 + _BANK_BLOCK])
            d, i = squared.topk(min(k, squared.shape[1]), dim=1, largest=False)
            i = i + k0
            if best_d is not None:
                d, order = torch.cat([best_d, d], dim=1).topk(k, dim=1, largest=False)
                i = torch.cat([best_i, i], dim=1).gather(1, order)
            best_d, best_i = d, i
        out_d[q0 : q0 + len(block)], out_i[q0 : q0 + len(block)] = best_d.sqrt(), best_i
    return out_d, out_i


@dataclass
class PatchDistances:
    """Nearest-bank distances of a batch's patches.

    Attributes:
        distances: (B, P) distance of each patch to the bank (exact where ``exact``, else an upper bound).
        indices: (B, P) bank row achieving ``distances``.
        exact: (B, P) True where the distance is exact.
    """

    distances: Tensor
    indices: Tensor
    exact: Tensor

    def max_patch(self) -> Tensor:
        """(B,) index of each image's most anomalous patch."""
        return self.distances.argmax(dim=1)


class MemoryBank(nn.Module):
    """The fitted memory bank, a buffer of (K, D) patch features in greedy k-center pick order.

    Args:
        n_entries: K.
        dim: D.
    """

    def __init__(self, n_entries: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("bank", torch.zeros(n_entries, dim))

    def search_exact(self, patches: Tensor) -> PatchDistances:
        """Exact nearest-bank distance of every patch of (B, P, D) ``patches``."""
        batch, n_patches, dim = patches.shape
        distances, indices = nearest(patches.reshape(-1, dim), self.bank)
        shape = (batch, n_patches)
        exact = torch.ones(shape, dtype=torch.bool, device=patches.device)
        return PatchDistances(distances.view(shape), indices.view(shape), exact)

    def search_bounded(self, patches: Tensor, n_coarse: int, per_round: int = 4) -> PatchDistances:
        """Upper bounds from the coarse level, exact where a patch could hold its image's maximum (module doc).

        Args:
            patches: (B, P, D) patch features.
            n_coarse: Rows of the coarse level (the first rows of the bank).
            per_round: Patches per image searched exactly in the first round (doubles every round).
        """
        batch, n_patches, dim = patches.shape
        flat = patches.reshape(-1, dim)
        if n_coarse >= len(self.bank):
            return self.search_exact(patches)
        distances, indices = nearest(flat, self.bank[:n_coarse])
        distances, indices = distances.view(batch, n_patches), indices.view(batch, n_patches)
        exact = torch.zeros_like(distances, dtype=torch.bool)
        bank_norms = (self.bank * self.bank).sum(dim=1)
        best = torch.full((batch,), -1.0, device=patches.device)
        while True:
            open_bounds = distances.masked_fill(exact | (distances <= best[:, None]), -1.0)
            values, chosen = open_bounds.topk(min(per_round, n_patches), dim=1)
            rows, cols = (values >= 0).nonzero(as_tuple=True)
            if len(rows) == 0:
                break
            cols = chosen[rows, cols]
            d, i = nearest(patches[rows, cols], self.bank, bank_norms)
            closer = d[:, 0] <= distances[rows, cols]  # always, up to rounding: coarse rows are bank rows
            distances[rows, cols] = torch.where(closer, d[:, 0], distances[rows, cols])
            indices[rows, cols] = torch.where(closer, i[:, 0], indices[rows, cols])
            exact[rows, cols] = True
            best = distances.masked_fill(~exact, -1.0).amax(dim=1)
            per_round *= 2
        return PatchDistances(distances, indices, exact)

    def support_distances(self, features: Tensor, nearest_rows: Tensor, n_neighbors: int) -> Tensor:
        """Distances from ``features`` (B, D) to the ``n_neighbors`` bank entries nearest ``bank[nearest_rows]``.

        Returns:
            (B, n) distances, the first column to the bank entry nearest that entry (itself, or a duplicate).
        """
        _, support = nearest(self.bank[nearest_rows], self.bank, k=n_neighbors)
        return torch.linalg.vector_norm(features[:, None, :] - self.bank[support], dim=2)

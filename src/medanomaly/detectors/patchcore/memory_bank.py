"""PatchCore's memory bank and its nearest-neighbour searches.

Scoring needs, for every test patch, the distance to its nearest bank entry, and the image score is the largest of
them. Brute force over a 100k-entry bank costs hundreds of milliseconds per 224 px image on a 2-core CPU, so the
default searches are *bounded*, in two steps:

1. an **upper bound** for every patch, its distance to some bank entry: with ``search_cells``, the nearest entry
   in the patch's few nearest IVF cells (``cells.py``, faiss; tight, usually exact); with ``search_bounded``, the
   nearest of the bank's first ``n_coarse`` rows (the bank is stored in greedy k-center pick order, so they are a
   k-center coreset of it; torch only, looser);
2. :meth:`MemoryBank.resolve_maximum`: in a few rounds, the patches of each image with the largest upper bounds get
   an exact search over the whole bank, until no remaining upper bound exceeds the image's largest exact distance.

The image maximum (hence the score, and the patch whose neighbours re-weight it) is therefore exact whatever the
bounds; elsewhere the map holds the upper bounds. ``search_exact`` computes every patch exactly instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from medanomaly.detectors.patchcore.cells import CellIndex

_BLOCK_ELEMENTS = 1 << 25  # distances held at once (128 MB of float32): query rows per block = this / bank rows


def nearest(queries: Tensor, keys: Tensor, key_norms: Tensor | None = None, k: int = 1) -> tuple[Tensor, Tensor]:
    """Exact k nearest neighbours: per block of queries, one matrix product against all keys, then min / top-k.

    Squared distances are |k|^2 - 2 q.k (+ |q|^2 after the selection), clipped at 0.

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
    rows = max(1, _BLOCK_ELEMENTS // max(len(keys), 1))
    for q0 in range(0, len(queries), rows):
        block = queries[q0 : q0 + rows]
        partial = torch.addmm(key_norms[None, :], block, keys.T, alpha=-2.0)
        if k == 1:
            d, i = partial.min(dim=1, keepdim=True)
        else:
            d, i = partial.topk(k, dim=1, largest=False)
        out_d[q0 : q0 + len(block)] = (d + (block * block).sum(dim=1, keepdim=True)).clamp_(min=0.0).sqrt_()
        out_i[q0 : q0 + len(block)] = i
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
        n_cells: IVF cells (0 = none); their centroids are a saved buffer, the faiss index is rebuilt on first use.
    """

    def __init__(self, n_entries: int, dim: int, n_cells: int = 0) -> None:
        super().__init__()
        self.register_buffer("bank", torch.zeros(n_entries, dim))
        if n_cells:
            self.register_buffer("centroids", torch.zeros(n_cells, dim))
        self._cell_index: CellIndex | None = None

    @property
    def n_cells(self) -> int:
        """Number of IVF cells (0 when the bank has none)."""
        return len(self.centroids) if hasattr(self, "centroids") else 0

    def search_exact(self, patches: Tensor) -> PatchDistances:
        """Exact nearest-bank distance of every patch of (B, P, D) ``patches``."""
        batch, n_patches, dim = patches.shape
        distances, indices = nearest(patches.reshape(-1, dim), self.bank)
        shape = (batch, n_patches)
        exact = torch.ones(shape, dtype=torch.bool, device=patches.device)
        return PatchDistances(distances.view(shape), indices.view(shape), exact)

    def search_bounded(self, patches: Tensor, n_coarse: int) -> PatchDistances:
        """Upper bounds from the first ``n_coarse`` bank rows, exact where a patch could hold its image's maximum."""
        batch, n_patches, dim = patches.shape
        if n_coarse >= len(self.bank):
            return self.search_exact(patches)
        distances, indices = nearest(patches.reshape(-1, dim), self.bank[:n_coarse])
        return self.resolve_maximum(patches, distances.view(batch, n_patches), indices.view(batch, n_patches))

    def search_cells(self, patches: Tensor, n_probe: int) -> PatchDistances:
        """Upper bounds from the ``n_probe`` nearest IVF cells, exact where a patch could hold its image's maximum."""
        if not self.n_cells:
            msg = "this memory bank has no IVF cells; use search_bounded"
            raise RuntimeError(msg)
        if self._cell_index is None:
            self._cell_index = CellIndex(self.bank, self.centroids)
        batch, n_patches, dim = patches.shape
        distances, indices = self._cell_index.search(patches.reshape(-1, dim), n_probe)
        return self.resolve_maximum(patches, distances.view(batch, n_patches), indices.view(batch, n_patches))

    def resolve_maximum(
        self, patches: Tensor, distances: Tensor, indices: Tensor, per_round: int = 1
    ) -> PatchDistances:
        """Make each image's largest patch distance exact, given (B, P) upper bounds and the rows achieving them.

        Args:
            patches: (B, P, D) patch features.
            distances: (B, P) upper bounds (distances to bank rows ``indices``; inf where unknown). Updated in place.
            indices: (B, P) bank rows. Updated in place.
            per_round: Patches per image searched exactly in the first round (doubles every round).
        """
        exact = torch.zeros_like(distances, dtype=torch.bool)
        bank_norms = (self.bank * self.bank).sum(dim=1)
        best = torch.full((len(distances),), -1.0, device=distances.device)
        while True:
            open_bounds = distances.masked_fill(exact | (distances <= best[:, None]), -1.0)
            values, chosen = open_bounds.topk(min(per_round, distances.shape[1]), dim=1)
            rows, cols = (values >= 0).nonzero(as_tuple=True)
            if len(rows) == 0:
                break
            cols = chosen[rows, cols]
            d, i = nearest(patches[rows, cols], self.bank, bank_norms)
            closer = d[:, 0] <= distances[rows, cols]  # always, up to rounding: the bounds are bank rows
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

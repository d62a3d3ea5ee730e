"""Channel groups for TENET: k-means over channel maps, group-wise inhibition masks, orthogonality.

Everything is batched over the samples (one clustering per sample, all at once), so it runs on
the accelerator; only the k-means iterations and the greedy centre snapping loop in Python.
Inputs are feature maps `(B, C, H, W)` (or `(B, C, D)` for clustering); group ids are `(B, C)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def initial_centres(batch: int, channels: int, groups: int, rng: torch.Generator) -> Tensor:
    """`groups` distinct random channel indices per sample, shape (B, G), drawn on the CPU."""
    return torch.rand(batch, channels, generator=rng).argsort(dim=1)[:, :groups]


def kmeans_channels(maps: Tensor, centres: Tensor, iters: int = 50, tol: float = 1e-4) -> Tensor:
    """Cluster each sample's channels (rows of `maps`, (B, C, D)) around medoid centres.

    `centres` (B, G) are the initial centre channels. An iteration assigns every channel to its
    nearest centre (squared Euclidean), then moves each centre to the channel nearest to its
    cluster mean that no lower-numbered centre took in this iteration. A sample stops when the
    squared sum of its centre shifts falls below `tol`, or after `iters` iterations; its group
    ids are the assignment of its last iteration.
    """
    maps = maps.float()
    batch, channels, _ = maps.shape
    rows = torch.arange(batch, device=maps.device)[:, None]
    ids = torch.zeros(batch, channels, dtype=torch.long, device=maps.device)
    active = torch.ones(batch, dtype=torch.bool, device=maps.device)
    for _ in range(iters):
        centre_maps = maps[rows, centres]
        assign = _squared_distances(centre_maps, maps).argmin(dim=1)
        ids = torch.where(active[:, None], assign, ids)
        moved = _snapped_centres(maps, assign, centre_maps)
        shift = (maps[rows, moved] - centre_maps).norm(dim=2).sum(dim=1)
        centres = torch.where(active[:, None], moved, centres)
        active &= shift.square() >= tol
        if not active.any():
            break
    return ids


def _squared_distances(points: Tensor, maps: Tensor) -> Tensor:
    """(B, P, C) squared distances from each of the P points to each channel map, summed directly.

    Direct sums (no |a|^2 - 2ab + |b|^2 shortcut) keep exact ties exact: a two-channel cluster's
    mean is equally far from both, and the lower channel index must win.
    """
    return torch.stack([(maps - p[:, None]).square().sum(dim=2) for p in points.unbind(1)], dim=1)


def _snapped_centres(maps: Tensor, assign: Tensor, centre_maps: Tensor) -> Tensor:
    """Each cluster's mean snapped to the nearest channel not taken by a lower-numbered cluster.

    An empty cluster has no mean; it snaps from its previous centre instead.
    """
    groups = centre_maps.shape[1]
    members = F.one_hot(assign, groups).to(maps.dtype)  # (B, C, G)
    counts = members.sum(dim=1)[..., None]
    means = members.transpose(1, 2) @ maps / counts.clamp(min=1)
    targets = torch.where(counts > 0, means, centre_maps)
    distances = _squared_distances(targets, maps)
    taken = torch.zeros_like(distances[:, 0], dtype=torch.bool)
    picks = []
    for g in range(groups):
        pick = distances[:, g].masked_fill(taken, float("inf")).argmin(dim=1)
        taken.scatter_(1, pick[:, None], True)
        picks.append(pick)
    return torch.stack(picks, dim=1)


def inhibition_masks(features: Tensor, grads: Tensor, ids: Tensor, groups: int,
                     eps: float = 1e-8) -> Tensor:
    """Group-wise reversed maps (B, C, H, W), one spatial map shared by a group's channels.

    A channel's weight is the spatial mean of its gradient; a group's importance is the sum of its
    weights. A group of positive importance gets sigmoid(-z), z being the z-scored weighted sum of
    its channel maps (strong regions are inhibited); any other group gets ones (left alone).
    """
    batch, channels, height, width = features.shape
    weights = grads.float().mean(dim=(2, 3))
    weighted_members = F.one_hot(ids, groups).float() * weights[..., None]  # (B, C, G)
    importance = weighted_members.sum(dim=1)[..., None]
    maps = weighted_members.transpose(1, 2) @ features.float().flatten(2)  # (B, G, HW)
    spread = maps.std(dim=2, correction=0, keepdim=True)
    z = (maps - maps.mean(dim=2, keepdim=True)) / (spread + eps)
    reversed_maps = torch.where(importance > 0, torch.sigmoid(-z), torch.ones_like(z))
    per_channel = reversed_maps.gather(1, ids[..., None].expand(-1, -1, height * width))
    return per_channel.view(batch, channels, height, width)


def orthogonality_loss(features: Tensor, ids: Tensor, groups: int) -> Tensor:
    """Mean |<g_i, g_j>| over pairs of a sample's non-empty groups, averaged over the samples.

    g_i is the mean map of group i's channels (not normalised); a sample with a single non-empty
    group contributes zero.
    """
    members = F.one_hot(ids, groups).float()  # (B, C, G)
    counts = members.sum(dim=1)
    means = members.transpose(1, 2) @ features.float().flatten(2) / counts.clamp(min=1)[..., None]
    gram = (means @ means.transpose(1, 2)).abs()
    valid = counts > 0
    upper = torch.ones(groups, groups, dtype=torch.bool, device=ids.device).triu(diagonal=1)
    pairs = upper & valid[:, :, None] & valid[:, None, :]
    n = valid.sum(dim=1)
    per_sample = (gram * pairs).sum(dim=(1, 2)) / (n * (n - 1) / 2).clamp(min=1)
    return per_sample.mean()

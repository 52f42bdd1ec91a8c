"""Dirichlet non-IID partitioning, deterministic per seed."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def dirichlet_partition(
    labels: Tensor, num_clients: int, *, alpha: float, seed: int, min_size: int = 1, max_tries: int = 100
) -> list[Tensor]:
    """Split sample indices among clients: each class spread by proportions drawn from Dir(alpha).

    Small alpha gives few classes per client (the reference used 0.1). Redraws until every client
    has at least ``min_size`` samples; every sample goes to exactly one client. Returns sorted
    index tensors, one per client.
    """
    if num_clients < 1:
        raise ValueError(f"num_clients must be at least 1, got {num_clients}")
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    if labels.numel() < num_clients * min_size:
        raise ValueError(f"{labels.numel()} samples cannot give {num_clients} clients {min_size} each")
    label_array = labels.cpu().numpy()
    rng = np.random.Generator(np.random.PCG64(seed))
    for _ in range(max_tries):
        shards: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for cls in np.unique(label_array):
            members = rng.permutation(np.flatnonzero(label_array == cls))
            shares = rng.dirichlet(np.full(num_clients, alpha))
            # Round to nearest (not down), so the last client is not handed every class's leftovers.
            cuts = np.rint(np.cumsum(shares)[:-1] * len(members)).astype(int)
            for client, part in enumerate(np.split(members, cuts)):
                shards[client].append(part)
        parts = [np.sort(np.concatenate(s)) for s in shards]
        if min(len(p) for p in parts) >= min_size:
            return [torch.from_numpy(p.astype(np.int64)) for p in parts]
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) draw in {max_tries} tries gave every client {min_size} samples; "
        "raise alpha or lower min_size"
    )

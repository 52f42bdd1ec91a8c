"""Global-local cross-modal ensemble (DESIGN.md section 2, step 6) and the mean baseline.

For client c and public sample i, the score is how well the client's representation of i retrieves
the *other* modality's global representation of i among all n of them:

    s[c, i] = L_c[i] . G[i] - logsumexp_j(L_c[i] . G[j])        (j = i dropped with exclude_self)

and the weights are a softmax over clients, per sample. The reference code materialised the n x n
logits per client (about 30 GB at n = 50k); here rows are processed in blocks (every client's rows
of a block in one plain matmul into a reused buffer), so the extra memory is O(block_size * n). Each
row's log-sum-exp is exact and overflow-safe: unshifted when the Cauchy-Schwarz bound proves every
logit of the block within +-60 (always so for unit vectors), shifted by the row max otherwise.

The round engine scores and sums client uploads as unit rows (:func:`unit_rows`), so no client can
buy weight or pull with large norms (DESIGN.md section 2, step 6).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# Target size of one block of logits (float32 elements): 16M elements = 64 MB, small next to the
# n x n matrix at any n where memory matters, large enough for matmul to run at full rate.
_BLOCK_ELEMENTS = 1 << 24
# Largest |logit| for which log(sum(exp(logits))) needs no shift: exp(+-60) is a normal float32
# (1e-26 to 1e26), so no term underflows to a zero sum and the sum overflows only beyond 3e12 terms.
_SAFE_LOGIT = 60.0


def ensemble_weights(
    local_reps: Sequence[Tensor],
    global_other: Tensor,
    *,
    exclude_self: bool = False,
    block_size: int | None = None,
) -> Tensor:
    """Per-sample softmax over clients of the global-local retrieval score. Returns ``[K, N]``.

    ``local_reps``: K tensors ``[N, d]``, one per client, in the modality being aggregated.
    ``global_other``: ``[N, d]``, the server's representations of the other modality.
    ``exclude_self`` drops j = i from the log-sum-exp (the paper); the default keeps it (the
    reference code). Accumulates in float32 (float64 stays float64) whatever the input dtype.
    """
    _validate(local_reps, global_other)
    if block_size is not None and block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    n, dim = global_other.shape
    if exclude_self and n < 2:
        raise ValueError("exclude_self needs at least 2 public samples")
    acc_dtype = _accumulation_dtype(local_reps[0].dtype)
    device = global_other.device
    global_acc = global_other.to(acc_dtype)  # [N, d]; no copy unless the dtype changes
    global_norm_max = float(global_acc.norm(dim=1).max())
    num_clients = len(local_reps)
    rows_per_block = min(n, block_size or max(1, _BLOCK_ELEMENTS // (num_clients * n)))
    # Reused across blocks: every client's rows of a block in one matmul (K * B rows keep the GEMM efficient).
    rows_buffer = torch.empty(num_clients * rows_per_block, dim, dtype=acc_dtype, device=device)  # [K * B, d]
    logits_buffer = torch.empty(num_clients * rows_per_block, n, dtype=acc_dtype, device=device)  # [K * B, N]
    scores = torch.empty(num_clients, n, dtype=acc_dtype, device=device)  # [K, N]
    for start in range(0, n, rows_per_block):
        stop = min(start + rows_per_block, n)
        width = stop - start
        rows = rows_buffer[: num_clients * width].view(num_clients, width, dim)  # [K, B, d]
        for client, reps in enumerate(local_reps):
            rows[client] = reps[start:stop]  # casts to the accumulation dtype
        logits = logits_buffer[: num_clients * width]  # [K * B, N]
        torch.matmul(rows.view(-1, dim), global_acc.T, out=logits)
        # Cauchy-Schwarz: |L_c[i] . G[j]| <= |L_c[i]| * max_j |G[j]| for every logit of the block.
        bounded = float(rows.norm(dim=-1).max()) * global_norm_max <= _SAFE_LOGIT
        scores[:, start:stop] = _block_scores(logits.view(num_clients, width, n), start, exclude_self, bounded)
    return torch.softmax(scores, dim=0)


def _block_scores(logits: Tensor, start: int, exclude_self: bool, bounded: bool) -> Tensor:
    """``s = l_i . g_i - logsumexp_j(l_i . g_j)`` from the block's logits ``[K, B, N]`` (overwritten). ``[K, B]``."""
    own = torch.arange(logits.shape[1], device=logits.device)
    positive = logits[:, own, start + own]  # [K, B], a copy: the in-place ops below leave it alone
    if exclude_self:
        logits[:, own, start + own] = float("-inf")
    if bounded:
        return positive - logits.exp_().sum(dim=-1).log_()
    # Large norms: shift by the exact row max (finite: n >= 2 when excluding self).
    shift = logits.amax(dim=-1, keepdim=True)  # [K, B, 1]
    return positive - shift.squeeze(-1) - logits.sub_(shift).exp_().sum(dim=-1).log_()


def contrastive_ensemble(
    local_reps: Sequence[Tensor],
    global_other: Tensor,
    *,
    exclude_self: bool = False,
    normalize: bool = True,
    block_size: int | None = None,
) -> Tensor:
    """CreamFL's aggregate ``A[i] = sum_c alpha[c, i] L_c[i]``, unit length when ``normalize``. ``[N, d]``.

    Re-normalising is a fix over the reference code: the server's outputs are unit vectors and
    could never match a shorter target under MSE.
    """
    weights = ensemble_weights(local_reps, global_other, exclude_self=exclude_self, block_size=block_size)
    return weighted_aggregate(local_reps, weights, normalize=normalize)


def mean_ensemble(local_reps: Sequence[Tensor], *, normalize: bool = True) -> Tensor:
    """The FedMD-style baseline: the plain average of the clients' representations. ``[N, d]``."""
    _validate(local_reps, None)
    first = local_reps[0]
    weights = torch.full(
        (len(local_reps), first.shape[0]),
        1.0 / len(local_reps),
        dtype=_accumulation_dtype(first.dtype),
        device=first.device,
    )  # [K, N]
    return weighted_aggregate(local_reps, weights, normalize=normalize)


def weighted_aggregate(local_reps: Sequence[Tensor], weights: Tensor, *, normalize: bool) -> Tensor:
    """``sum_c weights[c, i] * local_reps[c][i]`` for weights ``[K, N]``; unit rows when ``normalize``. ``[N, d]``."""
    # Accumulate client by client: no [K, N, d] copy in the accumulation dtype.
    aggregate = torch.zeros(
        weights.shape[1], local_reps[0].shape[1], dtype=weights.dtype, device=weights.device
    )  # [N, d]
    for client, reps in enumerate(local_reps):
        aggregate.addcmul_(weights[client].unsqueeze(1), reps.to(weights.dtype))
    if normalize:
        aggregate = torch.nn.functional.normalize(aggregate, dim=1)
    return aggregate


def unit_rows(reps: Tensor) -> Tensor:
    """Every row of ``reps`` ``[N, d]`` scaled to unit L2 norm, without overflow for any finite input
    (zero rows stay zero). ``[N, d]``, same dtype.

    Dividing by the row's largest magnitude first keeps the sum of squares in [1, d]: the plain norm
    of a row with entries near 3e38 is Inf in float32, and dividing by it would give zeros."""
    peak = torch.linalg.vector_norm(reps, ord=math.inf, dim=1, keepdim=True)  # [N, 1], the largest |value|
    scaled = reps / peak.clamp_min_(torch.finfo(reps.dtype).tiny)  # [N, d], entries in [-1, 1]
    return scaled.div_(torch.linalg.vector_norm(scaled, dim=1, keepdim=True).clamp_min_(1e-12))


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _all_finite(mat: Tensor) -> bool:
    # aminmax propagates NaN and reaches +-inf: one reduction, no [N, d] temporary (unlike torch.isfinite).
    return bool(torch.isfinite(torch.stack(torch.aminmax(mat))).all())


def _validate(local_reps: Sequence[Tensor], global_other: Tensor | None) -> None:
    if len(local_reps) == 0:
        raise ValueError("no client representations to aggregate")
    first = local_reps[0]
    if first.dim() != 2 or first.shape[0] == 0 or first.shape[1] == 0:
        raise ValueError(f"client representations must be non-empty [N, d] matrices, got {tuple(first.shape)}")
    for client, reps in enumerate(local_reps):
        if reps.shape != first.shape:
            raise ValueError(f"client {client} sent shape {tuple(reps.shape)}, client 0 sent {tuple(first.shape)}")
        if reps.device != first.device:
            raise ValueError(f"client {client} is on {reps.device}, client 0 on {first.device}")
        if not reps.is_floating_point():
            raise ValueError(f"client {client} representations must be floating point, got {reps.dtype}")
        if not _all_finite(reps):
            raise ValueError(f"client {client} representations contain NaN or Inf")
    if global_other is not None:
        if global_other.shape != first.shape:
            raise ValueError(
                f"global representations have shape {tuple(global_other.shape)}, "
                f"client representations {tuple(first.shape)}"
            )
        if global_other.device != first.device:
            raise ValueError(f"global representations are on {global_other.device}, clients on {first.device}")
        if not _all_finite(global_other):
            raise ValueError("global representations contain NaN or Inf")

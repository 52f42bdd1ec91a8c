"""Image-text retrieval metrics (Recall@K in both directions), vectorised and computed in row blocks.

Similarity is the plain dot product: callers pass L2-normalised embeddings, so this is cosine similarity.

Rank of a query = number of *negative* candidates whose similarity is at least that of its best
ground-truth candidate, so rank 0 means a hit at R@1. Ties count against the query: a positive that
ties with a negative is ranked behind it. So a collapsed model (every embedding alike) scores zero
rather than 100, and the metric does not depend on the candidates' storage order, as a sort-based
rank (ties broken by index) would.

The [queries, candidates] score matrix is never materialised whole: queries are processed ``block_size``
rows at a time (by default about 64 MB of scores per block), so 25k x 5k evaluations fit in modest memory.
Scores are computed in at least float32, so float16 embeddings do not overflow or lose precision.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

__all__ = ["RetrievalMetrics", "evaluate_folds", "heldout_metrics", "retrieval_metrics", "retrieval_ranks"]

_BLOCK_BYTES = 64 * 2**20
COCO_5K_IMAGES, COCO_FOLD_IMAGES = 5000, 1000


@dataclass(frozen=True)
class RetrievalMetrics:
    """Recall@K in percent (0-100) for image->text (i2t) and text->image (t2i) retrieval."""

    i2t_r1: float
    i2t_r5: float
    i2t_r10: float
    t2i_r1: float
    t2i_r5: float
    t2i_r10: float
    # On a 5,000-image set, the paper's COCO 1K protocol beside these (the 5K) figures.
    one_k: RetrievalMetrics | None = None

    @property
    def rsum(self) -> float:
        """Sum of the two R@1 values (i2t + t2i), in percent."""
        return self.i2t_r1 + self.t2i_r1

    @property
    def r1_sum(self) -> float | None:
        """The paper's R@1 sum: 1K i2t + 1K t2i + 5K i2t + 5K t2i (None without the 1K protocol)."""
        return None if self.one_k is None else self.one_k.rsum + self.rsum

    def as_dict(self) -> dict[str, float]:
        recalls = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "one_k"}
        if self.one_k is None:
            return {**recalls, "rsum": self.rsum}
        one_k = {f"1k_{name}": value for name, value in self.one_k.as_dict().items() if name != "rsum"}
        return {**recalls, "rsum": self.rsum, **one_k, "r1_sum": self.one_k.rsum + self.rsum}


def retrieval_ranks(
    image_emb: Tensor, text_emb: Tensor, caption_image: Tensor, *, block_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """Rank of the best positive for every query: (i2t ranks [N], t2i ranks [M]), int64, 0 = top.

    ``image_emb`` [N, d], ``text_emb`` [M, d], ``caption_image`` [M]: the image index of each caption.
    Everything is moved to ``image_emb``'s device. Raises ValueError for non-2-D, empty or non-finite
    embeddings, mismatched dims, a malformed or out-of-range ``caption_image``, or an uncaptioned image.
    """
    images, texts, owners = _validated(image_emb, text_emb, caption_image)
    if block_size is not None and block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size}")
    return _i2t_ranks(images, texts, owners, block_size), _t2i_ranks(images, texts, owners, block_size)


def retrieval_metrics(
    image_emb: Tensor,
    text_emb: Tensor,
    caption_image: Tensor,
    *,
    ks: tuple[int, int, int] = (1, 5, 10),
    block_size: int | None = None,
) -> RetrievalMetrics:
    """Recall@K (percent) in both directions.

    i2t: an image is a hit at K if its best-ranked caption is in the top K captions.
    t2i: a caption is a hit at K if its image is in the top K images.
    ``ks`` are the three cutoffs reported, in order, in the r1 / r5 / r10 fields (named for the default).
    """
    if len(ks) != 3 or any(k < 1 for k in ks):
        raise ValueError(f"ks must be three positive cutoffs, got {ks}")
    i2t, t2i = retrieval_ranks(image_emb, text_emb, caption_image, block_size=block_size)
    i2t_r1, i2t_r5, i2t_r10 = (_recall(i2t, k) for k in ks)
    t2i_r1, t2i_r5, t2i_r10 = (_recall(t2i, k) for k in ks)
    return RetrievalMetrics(i2t_r1, i2t_r5, i2t_r10, t2i_r1, t2i_r5, t2i_r10)


def heldout_metrics(image_emb: Tensor, text_emb: Tensor, caption_image: Tensor) -> RetrievalMetrics:
    """R@1/5/10 both ways on the whole held-out set; on 5,000 images (COCO's 5K test set) also the
    1K protocol (five folds of 1,000), so the paper's four-term R@1 sum can be reported."""
    full = retrieval_metrics(image_emb, text_emb, caption_image)
    if len(image_emb) != COCO_5K_IMAGES:
        return full
    folds = evaluate_folds(image_emb, text_emb, caption_image, folds=COCO_5K_IMAGES // COCO_FOLD_IMAGES)
    return replace(full, one_k=folds)


def evaluate_folds(
    image_emb: Tensor,
    text_emb: Tensor,
    caption_image: Tensor,
    *,
    folds: int,
    ks: tuple[int, int, int] = (1, 5, 10),
    block_size: int | None = None,
) -> RetrievalMetrics:
    """COCO "1K" protocol: metrics on ``folds`` contiguous, equal image folds, averaged over the folds.

    Each fold keeps exactly the captions of its images, wherever they sit in ``text_emb``.
    """
    images, texts, owners = _validated(image_emb, text_emb, caption_image)
    if folds < 1 or len(images) % folds != 0:
        raise ValueError(f"folds must be a positive divisor of the image count {len(images)}, got {folds}")
    fold_size = len(images) // folds
    results = []
    for start in range(0, len(images), fold_size):
        in_fold = (owners >= start) & (owners < start + fold_size)  # [M]
        results.append(
            retrieval_metrics(
                images[start : start + fold_size],
                texts[in_fold],
                owners[in_fold] - start,
                ks=ks,
                block_size=block_size,
            )
        )
    return _mean(results)


def _validated(image_emb: Tensor, text_emb: Tensor, caption_image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Check the inputs; return them on one device, embeddings in (at least) float32, indices in int64."""
    shapes = f"image_emb {tuple(image_emb.shape)}, text_emb {tuple(text_emb.shape)}"
    if image_emb.ndim != 2 or text_emb.ndim != 2:
        raise ValueError(f"embeddings must be 2-D, got {shapes}")
    if image_emb.numel() == 0 or text_emb.numel() == 0:
        raise ValueError(f"empty input: {shapes}")
    if image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(f"embedding dims differ: image {image_emb.shape[1]} vs text {text_emb.shape[1]}")
    n_images, n_texts = image_emb.shape[0], text_emb.shape[0]
    if caption_image.shape != (n_texts,):
        raise ValueError(f"caption_image must have shape ({n_texts},), got {tuple(caption_image.shape)}")
    index_dtype = caption_image.dtype
    if index_dtype.is_floating_point or index_dtype.is_complex or index_dtype == torch.bool:
        raise ValueError(f"caption_image must hold integer image indices, got {index_dtype}")

    device = image_emb.device
    dtype = torch.promote_types(torch.promote_types(image_emb.dtype, text_emb.dtype), torch.float32)
    images = image_emb.to(device=device, dtype=dtype)  # [N, d]
    texts = text_emb.to(device=device, dtype=dtype)  # [M, d]
    owners = caption_image.to(device=device, dtype=torch.int64)  # [M]

    low, high = int(owners.min()), int(owners.max())
    if low < 0 or high >= n_images:
        raise ValueError(f"caption_image values must lie in [0, {n_images}), got range [{low}, {high}]")
    uncaptioned = (torch.bincount(owners, minlength=n_images) == 0).nonzero().flatten()  # [U]
    if len(uncaptioned) > 0:
        raise ValueError(f"{len(uncaptioned)} image(s) have no caption, e.g. image {int(uncaptioned[0])}")
    if not (torch.isfinite(images).all() and torch.isfinite(texts).all()):
        raise ValueError("embeddings contain NaN or infinite values")
    return images, texts, owners


def _blocks(n_queries: int, n_candidates: int, block_size: int | None, dtype: torch.dtype) -> list[range]:
    """Query row ranges; by default sized so one [block, candidates] score matrix is ~_BLOCK_BYTES."""
    size = block_size if block_size is not None else max(1, _BLOCK_BYTES // (n_candidates * dtype.itemsize))
    return [range(start, min(start + size, n_queries)) for start in range(0, n_queries, size)]


def _i2t_ranks(images: Tensor, texts: Tensor, owners: Tensor, block_size: int | None) -> Tensor:
    """Rank of each image's best-scoring caption among all captions: [N]."""
    ranks = []
    for block in _blocks(len(images), len(texts), block_size, texts.dtype):
        scores = images[block.start : block.stop] @ texts.T  # [B, M]
        # Best positive per image by scattering this block's captions: O(M) extra memory, not a [B, M] mask.
        positives = ((owners >= block.start) & (owners < block.stop)).nonzero().flatten()  # [P]
        rows = owners[positives] - block.start  # [P]
        best = torch.full((len(block),), -torch.inf, dtype=scores.dtype, device=scores.device)  # [B]
        best = best.scatter_reduce(0, rows, scores[rows, positives], reduce="amax")  # [B]
        scores[rows, positives] = -torch.inf  # only negatives are counted
        ranks.append((scores >= best[:, None]).sum(dim=1))  # [B]
    return torch.cat(ranks)


def _t2i_ranks(images: Tensor, texts: Tensor, owners: Tensor, block_size: int | None) -> Tensor:
    """Rank of each caption's image among all images: [M]."""
    ranks = []
    for block in _blocks(len(texts), len(images), block_size, texts.dtype):
        scores = texts[block.start : block.stop] @ images.T  # [B, N]
        positive = scores.gather(1, owners[block.start : block.stop, None])  # [B, 1]
        ranks.append((scores >= positive).sum(dim=1) - 1)  # [B], minus the positive itself
    return torch.cat(ranks)


def _recall(ranks: Tensor, k: int) -> float:
    return 100.0 * (ranks < k).double().mean().item()


def _mean(results: list[RetrievalMetrics]) -> RetrievalMetrics:
    recalls = [f.name for f in fields(RetrievalMetrics) if f.name != "one_k"]
    return RetrievalMetrics(**{name: sum(getattr(r, name) for r in results) / len(results) for name in recalls})

"""A small bidirectional-GRU text encoder for clients (the reference clients used a BiGRU too)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from creamfl.models.common import masked_mean


@dataclass(frozen=True)
class GRUTextConfig:
    vocab_size: int = 64
    embedding_dim: int = 64
    hidden_size: int = 64
    num_layers: int = 1
    pad_id: int = 0

    @property
    def out_features(self) -> int:
        return 2 * self.hidden_size


class GRUTextEncoder(nn.Module):
    """Token ids ``[B, L]`` to the masked mean of BiGRU states, ``[B, 2 * hidden]``."""

    def __init__(self, config: GRUTextConfig) -> None:
        super().__init__()
        self.pad_id = config.pad_id
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_id)
        self.gru = nn.GRU(
            config.embedding_dim,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            bidirectional=True,
        )

    def forward(self, token_ids: Tensor) -> Tensor:
        mask = token_ids != self.pad_id  # [B, L]
        # Packed, so the backward direction starts at each sentence's last word, not in the padding.
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(self.embedding(token_ids), lengths, batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=token_ids.shape[1])
        return masked_mean(states, mask)  # [B, 2H] from states [B, L, 2H]

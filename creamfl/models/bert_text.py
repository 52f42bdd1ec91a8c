"""The server's text encoder: a ``transformers`` BERT built from a config or loaded from a local folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from creamfl.models.common import masked_mean


@dataclass(frozen=True)
class BertTextConfig:
    vocab_size: int = 64
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    max_length: int = 32
    dropout: float = 0.1
    pad_id: int = 0
    # A local folder with config.json + weights (e.g. all-MiniLM-L6-v2); overrides the sizes above.
    pretrained_path: Path | None = None


class BertTextEncoder(nn.Module):
    """Token ids ``[B, L]`` to the mean of the last hidden states over real tokens, ``[B, hidden]``."""

    def __init__(self, config: BertTextConfig) -> None:
        super().__init__()
        # Imported here: transformers takes seconds to import, and most commands never build a server.
        # From the defining modules, not the package: the package's lazy attribute loading is not
        # thread-safe, and two job workers in one process building servers at once got ImportError.
        try:
            from transformers.models.bert.configuration_bert import BertConfig
            from transformers.models.bert.modeling_bert import BertModel
        except ImportError as exc:  # an agent-only install has no transformers
            raise ValueError("the server's text encoder needs transformers (pip install 'creamfl[server]')") from exc

        self.pad_id = config.pad_id
        if config.pretrained_path is not None:
            self.bert = BertModel.from_pretrained(
                str(config.pretrained_path), local_files_only=True, add_pooling_layer=False
            )
        else:
            self.bert = BertModel(
                BertConfig(
                    vocab_size=config.vocab_size,
                    hidden_size=config.hidden_size,
                    num_hidden_layers=config.num_layers,
                    num_attention_heads=config.num_heads,
                    intermediate_size=config.intermediate_size,
                    max_position_embeddings=max(config.max_length, 8),
                    hidden_dropout_prob=config.dropout,
                    attention_probs_dropout_prob=config.dropout,
                    pad_token_id=config.pad_id,
                ),
                add_pooling_layer=False,
            )
        self.out_features = int(self.bert.config.hidden_size)

    def forward(self, token_ids: Tensor) -> Tensor:
        mask = token_ids != self.pad_id  # [B, L]
        hidden = self.bert(input_ids=token_ids, attention_mask=mask.long()).last_hidden_state  # [B, L, H]
        return masked_mean(hidden, mask)  # [B, H]

"""The server's data and tokenizer for a job: the public pairs and the evaluation set, from the
built-in generator or from a registered dataset's shards, read once per process and kept."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from coordinator_service.artifacts import ArtifactStore
from creamfl import rounds
from creamfl.data.builtin import BuiltinSpec, builtin_split
from creamfl.data.shards import Shard, decoded_pairs
from creamfl.data.types import ImageTextPairs
from creamfl.rounds import ServerData
from creamfl.text import Tokenizer
from creamfl.tokenizers import load_tokenizer
from shared_schemas.federation import FederationCreate, PublicSetSpec
from shared_schemas.vocabulary import TextEncoder


@dataclass(frozen=True)
class PairsSource:
    """Where a set of pairs comes from: the built-in split of ``builtin`` or a dataset's ``shards``."""

    builtin: BuiltinSpec | None
    split: str
    shards: tuple[str, ...]  # sha256 of each shard, in order; empty for the built-in set


@dataclass(frozen=True)
class DataSpec:
    """Everything that determines a job's server data (hashable: the cache key)."""

    public: PairsSource
    evaluation: PairsSource
    image_size: int
    tokenizer: str  # the federation's client tokenizer choice
    tokenizer_sha256: str | None
    text_encoder: TextEncoder


def data_spec(
    config: FederationCreate,
    public_shards: tuple[str, ...],
    evaluation_shards: tuple[str, ...],
    tokenizer_sha256: str | None,
) -> DataSpec:
    public = config.public_set
    builtin = (
        BuiltinSpec(seed=public.seed, public_size=public.size, test_size=public.test_size, image_size=public.image_size)
        if isinstance(public, PublicSetSpec)
        else None
    )
    evaluation_builtin = builtin if config.evaluation_set is None else None
    return DataSpec(
        public=PairsSource(builtin, "public", public_shards),
        evaluation=PairsSource(evaluation_builtin, "test", evaluation_shards),
        image_size=config.image_size,
        tokenizer=config.tokenizer,
        tokenizer_sha256=tokenizer_sha256,
        text_encoder=config.server.text_encoder,
    )


class ServerDataSource:
    """Reads and keeps the data of the last few federations a worker served."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self.data = functools.lru_cache(maxsize=2)(self._data)
        self.tokenizer = functools.lru_cache(maxsize=8)(self._tokenizer)

    def _tokenizer(self, choice: str, sha256: str | None) -> Tokenizer:
        """The federation's client tokenizer (the server's too, unless its text encoder brings its own)."""
        return load_tokenizer(choice, self.store.read(sha256).decode() if sha256 is not None else None)

    def _data(self, spec: DataSpec) -> ServerData:
        tokenizer = rounds.server_tokenizer(spec.text_encoder, self.tokenizer(spec.tokenizer, spec.tokenizer_sha256))
        return rounds.pairs_server_data(
            self._pairs(spec.public, spec.image_size), self._pairs(spec.evaluation, spec.image_size), tokenizer
        )

    def _pairs(self, source: PairsSource, image_size: int) -> ImageTextPairs:
        if source.builtin is not None:
            return builtin_split(source.builtin, source.split).pairs()
        return decoded_pairs((Shard.from_bytes(self.store.read(sha)) for sha in source.shards), image_size)

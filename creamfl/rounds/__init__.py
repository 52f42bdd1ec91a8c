"""The round engine: one round's typed steps, its config, its seeds, its subset and its selection.

The simulator (:mod:`creamfl.simulation`), the coordinator's jobs and the client agent are thin
callers of these; a test runs the same federation through the simulator and the services and
compares the numbers.
"""

from creamfl.rounds.aggregate import AggregationResult, Exclusion, WeightStats, aggregate, aggregate_uploads
from creamfl.rounds.config import RoundConfig, ServerTrainingConfig
from creamfl.rounds.plan import public_subset, select_clients
from creamfl.rounds.seeds import client_stream, derive_seed
from creamfl.rounds.server import (
    EvaluationSet,
    Server,
    ServerData,
    builtin_server_data,
    client_tokenizer,
    new_client_model,
    new_server,
    pairs_server_data,
    server_tokenizer,
)
from creamfl.rounds.steps import (
    LocalRound,
    Published,
    Representations,
    decode_wire,
    distil,
    evaluate,
    local_round,
    publish,
    wire,
)

__all__ = [
    "AggregationResult",
    "EvaluationSet",
    "Exclusion",
    "LocalRound",
    "Published",
    "Representations",
    "RoundConfig",
    "Server",
    "ServerData",
    "ServerTrainingConfig",
    "WeightStats",
    "aggregate",
    "aggregate_uploads",
    "builtin_server_data",
    "client_stream",
    "client_tokenizer",
    "decode_wire",
    "derive_seed",
    "distil",
    "evaluate",
    "local_round",
    "new_client_model",
    "new_server",
    "pairs_server_data",
    "public_subset",
    "publish",
    "select_clients",
    "server_tokenizer",
    "wire",
]

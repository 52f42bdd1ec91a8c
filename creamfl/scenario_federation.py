"""A scenario's data read from disk (:func:`load_scenario`), then the federation on it
(:func:`scenario_federation`): the simulator's way to run the paper's setting on real formats.

The client tokenizer is built once (``trained:V`` learns its vocabulary from the public captions)
and the server's scratch text encoder reads with it too, so the server's and the clients' texts
read alike. Images come at the federation's image size (``SimulationConfig.image_size``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from creamfl.data.specs import PrivateData
from creamfl.data.types import ImageTextPairs
from creamfl.participants import ClientSlot, Federation, layout_clients, pooled_pairs, simulated_client
from creamfl.rounds import ServerData, new_server
from creamfl.rounds.server import pairs_server_data
from creamfl.scenario import Scenario
from creamfl.sim_config import SimulationConfig
from creamfl.text import Tokenizer
from creamfl.tokenizers import UnknownShare, build_tokenizer, unknown_share
from creamfl.training import TaskData


@dataclass(frozen=True)
class LoadedClient:
    slot: ClientSlot
    data: PrivateData
    unknown: UnknownShare | None  # text-bearing clients: how much of their text the tokenizer cannot represent


@dataclass(frozen=True)
class LoadedScenario:
    """Everything read from disk, and the config with the data's sizes and client counts."""

    scenario: Scenario
    config: SimulationConfig
    public: ImageTextPairs
    test: ImageTextPairs
    tokenizer: Tokenizer
    clients: tuple[LoadedClient, ...]


def load_scenario(scenario: Scenario, config: SimulationConfig) -> LoadedScenario:
    """Read the public and test sets and every client's data; a ValueError says what is wrong."""
    with _named("public set"):
        public = scenario.public.load_pairs(config.image_size)
    with _named("test set"):
        test = scenario.test.load_pairs(config.image_size)
    tokenizer = build_tokenizer(scenario.tokenizer, public.captions)
    modalities = [plan.modality for plan in scenario.clients]
    config = dataclasses.replace(
        config,
        public_size=public.num_images,
        test_size=test.num_images,
        image_clients=modalities.count("image"),
        text_clients=modalities.count("text"),
        multimodal_clients=modalities.count("multimodal"),
    )
    slots = layout_clients(
        config, [(plan.modality, None if plan.model is None else plan.model.name) for plan in scenario.clients]
    )
    clients = []
    for slot, plan in zip(slots, scenario.clients, strict=True):
        if plan.model is not None and plan.model.dim not in (None, config.embed_dim):
            raise ValueError(
                f"client {slot.number} ({slot.name}): model {plan.model.name}:{plan.model.dim} has dimension "
                f"{plan.model.dim}, the federation's embed_dim is {config.embed_dim}"
            )
        with _named(f"client {slot.number} ({slot.name})"):
            data = plan.data.load(plan.modality, tokenizer, image_size=config.image_size, seed=config.seed)
        unknown = unknown_share(tokenizer, data.texts) if data.texts else None
        clients.append(LoadedClient(slot, data, unknown))
    return LoadedScenario(scenario, config, public, test, tokenizer, tuple(clients))


@contextmanager
def _named(what: str) -> Iterator[None]:
    """A ValueError raised inside says which part of the scenario it is about."""
    try:
        yield
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from exc


def scenario_federation(loaded: LoadedScenario) -> Federation:
    """The server (its text encoder reading with the clients' tokenizer) and the clients of ``loaded``."""
    config = loaded.config
    server = new_server(config.round_config(), device=config.device, tokenizer=loaded.tokenizer)
    data = pairs_server_data(loaded.public, loaded.test, server.tokenizer)
    first_captions = [loaded.public.captions[int(i)] for i in loaded.public.first_caption_per_image()]
    public_ids = loaded.tokenizer.encode(first_captions)  # [N, L]: what every client encodes
    clients = (
        [
            simulated_client(
                config,
                client.slot,
                client.data.task,
                vocab_size=loaded.tokenizer.vocab_size,
                num_classes=max(client.data.num_classes, 1),  # image-caption pairs have no classes
                public_token_ids=public_ids,
            )
            for client in loaded.clients
        ]
        if config.federated
        else []
    )
    if config.strategy == "centralized":
        data = ServerData(_pooled(data, loaded.clients, server.tokenizer), data.evaluation)
    return Federation(config, server, data, clients, sources=loaded.scenario.as_dict())


def _pooled(data: ServerData, clients: tuple[LoadedClient, ...], tokenizer: Tokenizer) -> TaskData:
    """The upper bound's pairs: the public pairs plus every multimodal client's, read by the server's tokenizer."""
    paired = [
        dataclasses.replace(c.data.task, targets=tokenizer.encode(c.data.texts))
        for c in clients
        if c.slot.kind == "multimodal"
    ]
    return pooled_pairs(data.public_pairs, paired)

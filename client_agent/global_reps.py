"""The round's global representations the regularisers need: downloaded (or found in the cache) and
checked against the task (readable, of its subset's rows and its dimension)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from client_agent.coordinator_client import CoordinatorClient
from client_agent.errors import AgentError
from client_agent.progress import Reporter
from client_agent.refusals import Refusals
from client_agent.stopping import Stopper
from creamfl.models import other_modality
from creamfl.models.common import Modality
from creamfl.payload import decode_payload, payload_indices
from shared_schemas.rounds import TrainTask


@dataclass(frozen=True)
class GlobalReps:
    client: CoordinatorClient
    refusals: Refusals
    cache_dir: Path
    reporter: Reporter
    stopper: Stopper

    def fetch(self, task: TrainTask, modalities: Iterable[Modality]) -> dict[Modality, torch.Tensor]:
        """Those a model of ``modalities`` needs: its own for intra, the other modality's for inter."""
        needed: set[Modality] = set()
        for modality in modalities:
            if task.training.intra:
                needed.add(modality)
            if task.training.inter:
                needed.add(other_modality(modality))
        return {modality: self._one(task, modality) for modality in sorted(needed)}

    def _one(self, task: TrainTask, modality: Modality) -> torch.Tensor:
        if modality not in task.global_urls or modality not in task.global_sha256:
            raise AgentError(f"round {task.round} publishes no {modality} global representations")
        with (
            self.stopper.abandonable(),
            self.reporter.step("download", None, "bytes", round=task.round, modality=modality) as update,
        ):
            path = self.refusals.call(
                lambda: self.client.download_global(
                    task.global_urls[modality],
                    expected_sha256=task.global_sha256[modality],
                    cache_dir=self.cache_dir,
                    progress=update,
                )
            )
        data = path.read_bytes()
        try:
            rep = decode_payload(data)[modality]
            indices = payload_indices(data)
        except (KeyError, ValueError) as exc:
            raise AgentError(
                f"round {task.round}: the {modality} global representations are unreadable: {exc}"
            ) from exc
        if tuple(rep.shape) != (len(task.subset), task.embed_dim):
            raise AgentError(
                f"round {task.round}: {modality} global representations have shape {list(rep.shape)}, "
                f"expected [{len(task.subset)}, {task.embed_dim}]"
            )
        if indices is not None and indices.tolist() != task.subset:
            raise AgentError(f"round {task.round}: the {modality} global representations are of other rows")
        return rep

"""Every random number of a round comes from one derivation: (federation seed, round, purpose).

The server, the public-subset draw, the client selection and each client's local training have
streams of their own, so a federated run and its server-only baseline differ only by what
federation changes, and a job re-run after a crash draws the same numbers. Dropout draws from
torch's global generator: :func:`seeded_global_rng` seeds it for one step and restores it after.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

PUBLIC_SUBSET = "public-subset"
SERVER_RETRIEVAL = "server-retrieval"
SERVER_DISTILLATION = "server-distillation"
CPU = torch.device("cpu")
_GLOBAL_RNG = threading.RLock()


def selection_purpose(attempt: int) -> str:
    """A re-opened round (``attempt`` > 0) draws its clients afresh."""
    return f"selection:{attempt}"


def client_purpose(stream: str) -> str:
    return f"client:{stream}"


def client_stream(*, init_seed: int | None, client_id: str) -> str:
    """What names a client's local-training stream: the built-in share it holds (so a simulated client
    and the agent holding the same share draw the same numbers), else its id."""
    return client_id if init_seed is None else f"builtin-{init_seed}"


def derive_seed(seed: int, round_number: int, purpose: str) -> int:
    """A 63-bit seed, a hash of its three parts (no arithmetic collisions between purposes or rounds)."""
    digest = hashlib.sha256(f"creamfl/{seed}/{round_number}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, round_number: int, purpose: str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, round_number, purpose))


@contextmanager
def seeded_global_rng(seed: int, device: torch.device = CPU) -> Iterator[None]:
    """Seed torch's global generators (dropout, initialisation) for one step, alone in the process;
    the caller's state is restored after."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with _GLOBAL_RNG, torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield

"""The scenario: presets, the command-line options, and the federation config the API gets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from creamfl.sim_config import SimulationConfig


# Sizes on top of the simulator's defaults. "demo" is the simulator's demo preset (`make simulate`),
# so `creamfl simulate --preset demo` is the same federation in one process; "tiny" is a smoke run.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"rounds": 2, "public_size": 100, "test_size": 100, "private_per_client": 60, "embed_dim": 64},
    "demo": {"rounds": 6, "public_size": 500, "test_size": 500, "private_per_client": 2500, "embed_dim": 128},
}
# The scenario options that map one to one onto `creamfl simulate` flags.
SCENARIO_FLAGS = (
    "rounds",
    "seed",
    "public_size",
    "test_size",
    "private_per_client",
    "dirichlet_alpha",
    "embed_dim",
    "image_clients",
    "text_clients",
    "multimodal_clients",
)


@dataclass
class Options:
    run_dir: Path
    coordinator: str | None = None
    admin_token: str | None = None
    port: int | None = None
    agent_threads: int = 1
    server_threads: int | None = None
    round_deadline_s: float = 900.0
    timeout_s: float = 1800.0
    start_agents: bool = True
    handoff: Path | None = None
    baseline: bool = True
    keep_serving: bool = False


def scenario_config(preset: str, **overrides: Any) -> SimulationConfig:
    """The simulator's config for this scenario (strategy creamfl); raises ValueError for bad values."""
    from creamfl.sim_config import SimulationConfig

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    given = {key: value for key, value in overrides.items() if value is not None}
    return SimulationConfig(**{**PRESETS[preset], **given})


def check_options(config: SimulationConfig, options: Options) -> None:
    if config.total_clients < 1:
        raise ValueError("the federation needs at least one client")
    if options.agent_threads < 1 or (options.server_threads is not None and options.server_threads < 1):
        raise ValueError("--agent-threads and --server-threads must be at least 1")
    if options.timeout_s <= 0 or options.round_deadline_s <= 0:
        raise ValueError("--timeout and --round-deadline must be positive")
    if options.coordinator is not None:
        if not options.coordinator.startswith(("http://", "https://")):
            raise ValueError(f"--coordinator must be an http:// or https:// URL, got {options.coordinator!r}")
        if not options.admin_token:
            raise ValueError("--coordinator needs the admin token: pass --admin-token or set CREAMFL_ADMIN_TOKEN")
        if options.port is not None or options.keep_serving:
            raise ValueError("--port and --keep-serving are for the coordinator the demo starts, not --coordinator")
    federation_config(config, deadline_s=options.round_deadline_s)  # validated like the API will


def federation_config(config: SimulationConfig, *, deadline_s: float) -> dict[str, Any]:
    """The coordinator's federation config for the simulator's ``config`` (every field spelled out)."""
    from pydantic import ValidationError

    from coordinator_service.round_config import federation_fields
    from shared_schemas.federation import FederationCreate

    seats = config.clients_per_round or config.total_clients
    body: dict[str, Any] = {
        "name": f"demo-seed{config.seed}",
        **federation_fields(config.round_config()),
        "public_set": {
            "kind": "builtin",
            "seed": config.seed,
            "size": config.public_size,
            "test_size": config.test_size,
            "image_size": config.image_size,
        },
        "rounds": config.rounds,
        "clients_per_round": seats,
        "min_clients": seats,  # every client in every round, as in the simulator
        "round_deadline_s": deadline_s,
        "max_reopen": 1,
    }
    try:
        FederationCreate.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"the federation config is invalid: {problems}") from exc
    return body


def simulate_command(config: SimulationConfig) -> str:
    """The ``creamfl simulate`` command line that runs this scenario in one process."""
    from creamfl.sim_config import SimulationConfig

    defaults = SimulationConfig()
    flags = []
    for name in SCENARIO_FLAGS:
        value = getattr(config, name)
        if value != getattr(defaults, name):
            flag = "--" + name.replace("_", "-")
            flags.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    return " ".join(["creamfl simulate", *flags])

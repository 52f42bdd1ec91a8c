"""``creamfl-coordinator demo``: the main job, a real federation on this machine, as one command.

It starts ``creamfl-coordinator serve`` on 127.0.0.1 (or drives the coordinator at ``--coordinator``),
creates a federation through the API, starts one ``creamfl-agent run`` process per client (image,
text and image+text clients, two model sizes each; client I of K holds the simulator's client I's
Dirichlet share of the built-in dataset and starts from its initial weights), follows the rounds
and prints one line per round: the time in each state, the participants, the bytes up and down,
the ensemble weight spread, and retrieval R@1 both ways with their sum. Then it trains the
server-only baseline on the same data and seed in this process, downloads the best server
checkpoint, and writes everything to ``<run-dir>/summary.json``.

Every process it starts is stopped when it ends, also on Ctrl-C or SIGTERM. Exit status: 0 when
every round completed, 1 when something failed (the message says what), 2 for bad options, 130 or
143 when interrupted by SIGINT or SIGTERM.

Only the standard library is imported at module level: ``creamfl-coordinator serve`` stays light.
"""

from coordinator_service.demo.agents import _write_handoff, agent_plans
from coordinator_service.demo.cli import add_arguments, main
from coordinator_service.demo.config import SCENARIO_FLAGS, Options, check_options, scenario_config

__all__ = [
    "SCENARIO_FLAGS",
    "Options",
    "_write_handoff",
    "add_arguments",
    "agent_plans",
    "check_options",
    "main",
    "scenario_config",
]

"""The CreamFL client agent: joins a federation run by the coordinator from an IoT/mobile gateway.

It enrolls once (identity kept in its state dir), long-polls for work, downloads the round's global
representations, trains its small model locally with the CreamFL regularisers, and uploads its
representations of the round's public subset (DESIGN.md sections 1, 2 steps 4-5, 6 and 8).
Entry point: ``creamfl-agent run`` (:mod:`client_agent.cli`).
"""

"""Stands in for transformers in every agent subprocess the tests start (its folder goes first on
PYTHONPATH): an agent installed with its own extra has no transformers, so it must never import it."""

raise ImportError("the agent imported transformers, which its install (creamfl[agent]) does not have")

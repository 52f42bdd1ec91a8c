"""Pydantic wire models shared by the coordinator and the client agent (no torch import)."""

"""Registered datasets: where a source may be read from, validating its items, registering it as shards."""

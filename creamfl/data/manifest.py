"""The public set's manifest: item ids and content hashes, so every party can check it holds the
same public data (the built-in set is regenerated locally from its seed, never downloaded)."""

from __future__ import annotations

import hashlib
from typing import Any

from creamfl.data.scenes import Scenes


def scenes_manifest(scenes: Scenes) -> dict[str, Any]:
    """``{"size", "sha256", "items": [{"id", "sha256"}]}``; an item's hash covers its pixels and captions."""
    items = []
    overall = hashlib.sha256()
    for index in range(len(scenes)):
        digest = hashlib.sha256(scenes.images[index].contiguous().numpy().tobytes())
        for caption in scenes.captions[index]:
            digest.update(b"\0" + caption.encode())
        item_hash = digest.hexdigest()
        overall.update(bytes.fromhex(item_hash))
        items.append({"id": index, "sha256": item_hash})
    return {"size": len(scenes), "sha256": overall.hexdigest(), "items": items}

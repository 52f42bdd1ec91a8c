"""The folders a dataset source may be read from (``CREAMFL_DATASET_ROOTS``): a path counts as inside
only once resolved, symlinks and ``..`` followed, so neither can reach elsewhere on the host."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

ROOTS_SETTING = "CREAMFL_DATASET_ROOTS"


class OutsideRoots(ValueError):
    """A source path that resolves outside every dataset root, or no roots are configured."""


class DatasetRoots:
    def __init__(self, roots: Sequence[Path]) -> None:
        self.roots = tuple(root.resolve() for root in roots)

    def check(self, path: Path) -> None:
        """Raise :class:`OutsideRoots` unless ``path`` resolves inside a root, ValueError if it cannot
        be resolved (a symlink loop); the message names ``path`` as given, never where it leads."""
        if not self.roots:
            raise OutsideRoots(
                f"registering datasets is off: set {ROOTS_SETTING} to the folders sources may be read from"
            )
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError) as exc:  # pathlib reports a symlink loop as a RuntimeError
            raise ValueError(f"{path} cannot be resolved: {exc}") from None
        if not any(resolved.is_relative_to(root) for root in self.roots):
            listed = ", ".join(str(root) for root in self.roots)
            raise OutsideRoots(f"{path} is outside the dataset roots ({ROOTS_SETTING}: {listed})")

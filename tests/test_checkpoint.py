"""Training-state checkpoints: a byte-exact round trip, and the same bytes for the same state."""

from __future__ import annotations

import torch

from creamfl.checkpoint import load_training_state, save_training_state


def _trained() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_the_same_state_always_gives_the_same_bytes() -> None:
    # Prepare: safetensors orders its metadata map differently from one call to the next
    model, optimizer = _trained()

    # Execute
    saved = {save_training_state(model, optimizer) for _ in range(20)}

    # Assert: content-addressed artifacts of a re-run job are the same file
    assert len(saved) == 1


def test_a_checkpoint_restores_model_and_optimizer_exactly() -> None:
    # Prepare
    model, optimizer = _trained()
    data = save_training_state(model, optimizer)
    restored = torch.nn.Linear(3, 2)
    restored_optimizer = torch.optim.AdamW(restored.parameters(), lr=0.5)

    # Execute
    load_training_state(restored, restored_optimizer, data)

    # Assert
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values(), strict=True)
    )
    assert restored_optimizer.param_groups[0]["lr"] == 1e-3
    for index, entry in optimizer.state_dict()["state"].items():
        for key, value in entry.items():
            assert torch.equal(
                torch.as_tensor(value), torch.as_tensor(restored_optimizer.state_dict()["state"][index][key])
            )

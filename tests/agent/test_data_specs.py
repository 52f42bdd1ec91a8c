"""Data specs and model specs: parsed, loaded from the real formats, and refused with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from client_agent.data import parse_data_spec, parse_model_spec
from client_agent.errors import ConfigError
from creamfl.data.builtin import BuiltinSpec, builtin_split
from creamfl.data.partition import dirichlet_partition
from creamfl.data.scenes import CLASS_NAMES
from creamfl.data.types import ImageFiles
from creamfl.rounds import client_tokenizer
from tests.agent.data_files import scenes, write_ag_news, write_cifar100, write_image_folder, write_karpathy

TOKENIZER = client_tokenizer()


def test_builtin_gives_client_i_the_simulators_share() -> None:
    # Prepare
    private = builtin_split(BuiltinSpec(seed=3, private_size=3 * 40, image_size=32), "private")
    shares = dirichlet_partition(private.labels, 3, alpha=0.5, seed=3, min_size=8)

    # Execute
    loaded = [parse_data_spec(f"builtin:3:{i}/3?samples=40").load("image", TOKENIZER, image_size=32) for i in range(3)]

    # Assert
    for data, share in zip(loaded, shares, strict=True):
        assert data.samples == len(share) and data.num_classes == len(CLASS_NAMES)
        assert torch.equal(data.task.targets, private.labels[share])
        assert torch.equal(data.task.inputs[torch.arange(2)], private.images[share[:2]])
    assert sum(d.samples for d in loaded) == 120


def test_builtin_text_and_multimodal_shapes() -> None:
    # Execute
    text = parse_data_spec("builtin:0:0/2?samples=30").load("text", TOKENIZER, image_size=32)
    pairs = parse_data_spec("builtin:0:0/2?samples=30").load("multimodal", TOKENIZER, image_size=48)

    # Assert
    assert text.task.inputs.shape == (text.samples, TOKENIZER.max_length) and text.image_size is None
    assert pairs.num_classes == 0 and pairs.image_size == 48
    assert pairs.task.caption_image is not None and pairs.task.targets.shape[0] == 2 * pairs.samples
    assert pairs.task.inputs[torch.arange(1)].shape == (1, 3, 48, 48)


def test_an_image_folder_loads_lazily_at_the_asked_size(tmp_path: Path) -> None:
    # Prepare
    data = scenes(12)
    root = write_image_folder(tmp_path / "folder", data)

    # Execute
    loaded = parse_data_spec(f"image-folder:{root}").load("image", TOKENIZER, image_size=24)

    # Assert
    assert isinstance(loaded.task.inputs, ImageFiles) and loaded.image_size == 24
    assert loaded.samples == 12 and loaded.num_classes == len(set(data.labels.tolist()))
    assert loaded.task.inputs[torch.tensor([0])].shape == (1, 3, 24, 24)


def test_cifar100_loads_a_split_and_resizes(tmp_path: Path) -> None:
    # Prepare
    root = write_cifar100(tmp_path / "cifar", scenes(10))

    # Execute
    loaded = parse_data_spec(f"cifar100:{root}?split=test").load("image", TOKENIZER, image_size=40)

    # Assert
    assert loaded.samples == 10 and loaded.num_classes == len(CLASS_NAMES)
    assert loaded.task.inputs.shape == (10, 3, 40, 40) and loaded.task.inputs.dtype == torch.uint8


def test_ag_news_and_karpathy(tmp_path: Path) -> None:
    # Prepare
    data = scenes(10)
    csv_path = write_ag_news(tmp_path / "train.csv", data)
    document, images = write_karpathy(tmp_path / "coco", data, val=3)

    # Execute
    texts = parse_data_spec(f"ag-news:{csv_path}").load("text", TOKENIZER, image_size=32)
    train = parse_data_spec(f"karpathy:{document}?images={images}").load("multimodal", TOKENIZER, image_size=32)
    both = parse_data_spec(f"karpathy:{document}?images={images}&split=train,val").load(
        "multimodal", TOKENIZER, image_size=32
    )

    # Assert
    assert texts.samples == 10 and texts.num_classes == 4
    assert (train.samples, both.samples) == (7, 10)
    assert train.task.targets.shape[0] == 14  # two captions per image


@pytest.mark.parametrize(
    ("spec", "modality", "message"),
    [
        ("parquet:/x", "image", "unknown data spec"),
        ("builtin:0:3/3", "image", "0 <= I < K"),
        ("builtin:zero:1/3", "image", "expected builtin:SEED:I/K"),
        ("builtin:0:1/3?size=9", "image", "unknown option 'size'"),
        ("builtin:0:1/3?samples=-1", "image", "samples must be a positive integer"),
        ("image-folder:", "image", "say where the image-folder data is"),
        ("image-folder:/no/such/folder", "image", "cannot read the data: image folder /no/such/folder does not exist"),
        ("ag-news:/no/such.csv", "text", "cannot read the data"),
        ("ag-news:/x.csv", "image", "ag-news data is text data, not image"),
        ("cifar100:/x", "multimodal", "cifar100 data is image data, not multimodal"),
        ("karpathy:/x.json", "multimodal", "say where the images are"),
    ],
)
def test_bad_data_specs_are_refused_in_one_line(spec: str, modality: str, message: str) -> None:
    # Execute
    with pytest.raises(ConfigError) as refused:
        parse_data_spec(spec).load(modality, TOKENIZER, image_size=32)  # type: ignore[arg-type]

    # Assert
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_model_specs() -> None:
    # Execute / Assert
    assert parse_model_spec(None, "multimodal").name == "dual-s"
    assert parse_model_spec("image-cnn-m:64", "image").dim == 64
    with pytest.raises(ConfigError, match="unknown client model"):
        parse_model_spec("vit-huge", "image")
    with pytest.raises(
        ConfigError, match=r"represents text, but --modality is image; use one of image-cnn-s, image-cnn-m"
    ):
        parse_model_spec("text-gru-s", "image")
    with pytest.raises(ConfigError, match="positive integer"):
        parse_model_spec("dual-s:x", "multimodal")

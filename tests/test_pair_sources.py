"""Image-caption sources (``creamfl.data.sources``): specs, the three file layouts and every bad input,
on fixture files written into ``tmp_path``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from creamfl.data.sources import PairSource, SourceItem, parse_pair_source

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)


def write_image(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 5), colour).save(path)
    return path


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list[Any]) -> Path:
    return write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def karpathy_entry(filename: str, split: str, captions: list[str], filepath: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"filename": filename, "split": split, "sentences": [{"raw": c} for c in captions]}
    if filepath is not None:
        entry["filepath"] = filepath
    return entry


def read_items(spec: str) -> list[SourceItem]:
    return list(parse_pair_source(spec).items())


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    write_image(root / "train2014" / "a.png", RED)
    write_image(root / "val2014" / "b.jpg", GREEN)
    write_image(root / "c.png", BLUE)
    return root


# --- specs ------------------------------------------------------------------------------------------


def test_a_karpathy_spec_reads_train_by_default_and_lists_its_files() -> None:
    # Execute
    source = parse_pair_source("karpathy:/data/coco.json?images=/data/img")

    # Assert
    assert source == PairSource(
        "karpathy", Path("/data/coco.json"), Path("/data/img"), ("train",), "karpathy:/data/coco.json?images=/data/img"
    )
    assert source.files() == (Path("/data/coco.json"), Path("/data/img"))


def test_a_karpathy_spec_takes_several_splits() -> None:
    source = parse_pair_source("karpathy:c.json?images=img&split=train,restval")
    assert source.splits == ("train", "restval")


@pytest.mark.parametrize("name", ["caps.jsonl", "caps.csv", "CAPS.CSV"])
def test_a_captions_spec_has_no_splits(name: str) -> None:
    source = parse_pair_source(f"captions:{name}?images=img")
    assert (source.kind, source.path, source.images, source.splits) == ("captions", Path(name), Path("img"), ())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("coco.json?images=img", r"unknown kind"),
        ("flickr:coco.json?images=img", r"unknown kind 'flickr'"),
        ("karpathy:coco.json?images=img&size=3", r"unknown option 'size' for karpathy"),
        ("captions:c.csv?images=img&split=train", r"unknown option 'split' for captions"),
        ("karpathy:coco.json", r"say where the images are"),
        ("karpathy:coco.json?images=", r"say where the images are"),
        ("karpathy:?images=img", r"name the karpathy file"),
        ("karpathy:c.json?images=a&images=b", r"option 'images' is given twice"),
        ("karpathy:c.json?images=img&split=,", r"split names no split"),
        ("karpathy:c.json?images", r"malformed options"),
        ("captions:c.txt?images=img", r"\.jsonl or \.csv"),
    ],
)
def test_a_bad_spec_is_refused_with_the_reason(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_pair_source(spec)


# --- Karpathy ---------------------------------------------------------------------------------------


def test_karpathy_items_are_the_split_in_file_order_with_path_ids(tmp_path: Path, images: Path) -> None:
    # Prepare
    document = {
        "images": [
            karpathy_entry("a.png", "train", [" A red thing. ", "red"], "train2014"),
            karpathy_entry("b.jpg", "test", ["green"], "val2014"),
            karpathy_entry("c.png", "restval", ["blue"]),
        ]
    }
    write_text(tmp_path / "coco.json", json.dumps(document))

    # Execute
    items = read_items(f"karpathy:{tmp_path / 'coco.json'}?images={images}&split=restval,train")

    # Assert
    assert items == [
        SourceItem("train2014/a.png", images / "train2014" / "a.png", ("A red thing.", "red")),
        SourceItem("c.png", images / "c.png", ("blue",)),
    ]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"split": "train", "sentences": [{"raw": "x"}]}], r"image #0 lacks the key 'filename'"),
        ([{"filename": "c.png", "sentences": [{"raw": "x"}]}], r"image #0 lacks the key 'split'"),
        ([karpathy_entry("c.png", "train", [])], r"image #0 \('c.png'\) has no sentences"),
        ([karpathy_entry("c.png", "train", ["fine", "  "])], r"image #0 \('c.png'\) has an empty caption"),
        ([karpathy_entry("c.png", "train", ["x"]), karpathy_entry("c.png", "train", ["y"])], r"image #1 repeats"),
        ([karpathy_entry("../c.png", "train", ["x"])], r"image #0 has the image path '../c.png'"),
        ([karpathy_entry("c.png", "train", ["x"], "/etc")], r"image #0 has the image path '/etc/c.png'"),
        ([karpathy_entry("c.png", "test", ["x"])], r"no image in split\(s\) \['train'\]"),
        ([], r"no image in split\(s\)"),
    ],
)
def test_karpathy_refuses_bad_entries_naming_file_and_image(
    tmp_path: Path, images: Path, entries: list[Any], message: str
) -> None:
    # Prepare
    json_path = write_text(tmp_path / "coco.json", json.dumps({"images": entries}))

    # Execute / Assert
    with pytest.raises(ValueError, match=message) as info:
        read_items(f"karpathy:{json_path}?images={images}")
    assert str(json_path) in str(info.value)


def test_karpathy_refuses_malformed_json(tmp_path: Path, images: Path) -> None:
    json_path = write_text(tmp_path / "coco.json", '{"images": [')
    with pytest.raises(ValueError, match=r"coco\.json: not a readable JSON file"):
        read_items(f"karpathy:{json_path}?images={images}")


# --- captions JSONL ---------------------------------------------------------------------------------


def test_jsonl_items_take_caption_or_captions_and_an_optional_id(tmp_path: Path, images: Path) -> None:
    # Prepare
    path = write_text(
        tmp_path / "caps.jsonl",
        json.dumps({"image": "c.png", "caption": " blue "})
        + "\n\n"
        + json.dumps({"image": "train2014/a.png", "captions": ["red", "a red one"], "id": "r1"})
        + "\n"
        + json.dumps({"image": "val2014/b.jpg", "caption": "green", "id": 7, "extra": True})
        + "\n",
    )

    # Execute
    items = read_items(f"captions:{path}?images={images}")

    # Assert
    assert items == [
        SourceItem("c.png", images / "c.png", ("blue",)),
        SourceItem("r1", images / "train2014" / "a.png", ("red", "a red one")),
        SourceItem("7", images / "val2014" / "b.jpg", ("green",)),
    ]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"image": "c.png", "caption": "x"', ""], r"line 1 is not valid JSON"),
        (['["c.png", "x"]'], r"line 1 lacks the key 'image'"),
        (['{"caption": "x"}'], r"line 1 lacks the key 'image'"),
        (['{"image": "c.png"}'], r"line 1 needs exactly one of the keys 'caption' and 'captions'"),
        (['{"image": "c.png", "caption": "x", "captions": ["y"]}'], r"needs exactly one"),
        (['{"image": "c.png", "caption": "   "}'], r"line 1 \('c.png'\) has an empty caption"),
        (['{"image": "c.png", "captions": []}'], r"line 1 \('c.png'\) has no caption"),
        (['{"image": "c.png", "captions": ["x", 3]}'], r"line 1 \('c.png'\) has caption 2 of type int"),
        (['{"image": "c.png", "captions": "x"}'], r"line 1 has 'captions' of type str"),
        (['{"image": "c.png", "caption": "x", "id": ""}'], r"line 1 has the id ''"),
        (['{"image": "c.png", "caption": "x"}', '{"image": "c.png", "caption": "y"}'], r"line 2 repeats the id"),
        (['{"image": "a.png", "caption": "x", "id": "k"}', '{"image": "c.png", "caption": "y", "id": "k"}'], "'k'"),
        (['{"image": "../outside.png", "caption": "x"}'], r"line 1 has the image path '../outside.png'"),
        (['{"image": "/etc/passwd", "caption": "x"}'], r"line 1 has the image path '/etc/passwd'"),
        (["", "  "], r"no image"),
    ],
)
def test_jsonl_refuses_bad_records_naming_file_and_line(
    tmp_path: Path, images: Path, lines: list[str], message: str
) -> None:
    # Prepare
    path = write_text(tmp_path / "caps.jsonl", "\n".join(lines) + "\n")

    # Execute / Assert
    with pytest.raises(ValueError, match=message) as info:
        read_items(f"captions:{path}?images={images}")
    assert str(path) in str(info.value)


def test_a_missing_caption_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"caption file .*nope\.jsonl does not exist"):
        read_items(f"captions:{tmp_path / 'nope.jsonl'}?images={tmp_path}")


def test_a_caption_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "caps.jsonl"
    path.write_bytes(b'{"image": "c.png", "caption": "\xff\xfe"}\n')
    with pytest.raises(ValueError, match=r"caps\.jsonl: not a UTF-8 text file"):
        read_items(f"captions:{path}?images={tmp_path}")


# --- captions CSV -----------------------------------------------------------------------------------


def test_csv_items_skip_empty_extra_captions_and_take_an_optional_id(tmp_path: Path, images: Path) -> None:
    # Prepare: a BOM, as spreadsheet programs write, and a blank line
    path = tmp_path / "caps.csv"
    path.write_text(
        '\ufeffId,Image,caption,caption_2\nr1,train2014/a.png,"red, bright",a red one\n\nb, val2014/b.jpg ,,green\n',
        encoding="utf-8",
    )

    # Execute
    items = read_items(f"captions:{path}?images={images}")

    # Assert
    assert items == [
        SourceItem("r1", images / "train2014" / "a.png", ("red, bright", "a red one")),
        SourceItem("b", images / "val2014" / "b.jpg", ("green",)),
    ]


def test_csv_without_an_id_column_uses_the_image_path(tmp_path: Path, images: Path) -> None:
    path = write_text(tmp_path / "caps.csv", "image,caption\nc.png,blue\n")
    assert read_items(f"captions:{path}?images={images}") == [SourceItem("c.png", images / "c.png", ("blue",))]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"empty CSV file"),
        ("picture,caption\nc.png,x\n", r"must name an 'image' column"),
        ("image,text\nc.png,x\n", r"'caption\.\.\.' column"),
        ("image,caption,image\nc.png,x,c.png\n", r"repeats the column\(s\) \['image'\]"),
        ("image,caption\nc.png\n", r"line 2 has 1 fields, the header 2"),
        ('image,caption\nc.png,"unclosed\n', r"line \d: malformed CSV"),
        ("image,caption,caption2\nc.png, ,\n", r"line 2 \('c.png'\) has no caption"),
        ("id,image,caption\n,c.png,x\n", r"line 2 has an empty id"),
        ("image,caption\nc.png,x\nc.png,y\n", r"line 3 repeats the id 'c.png' of line 2"),
        ("image,caption\n../x.png,x\n", r"line 2 has the image path '../x.png'"),
        ("image,caption\n,x\n", r"line 2 has the image path ''"),
        ("image,caption\n", r"no image"),
    ],
)
def test_csv_refuses_bad_rows_naming_file_and_line(tmp_path: Path, images: Path, text: str, message: str) -> None:
    # Prepare
    path = write_text(tmp_path / "caps.csv", text)

    # Execute / Assert
    with pytest.raises(ValueError, match=message) as info:
        read_items(f"captions:{path}?images={images}")
    assert str(path) in str(info.value)


# --- streaming and load_pairs -----------------------------------------------------------------------


def test_items_stream_a_jsonl_file_up_to_its_first_bad_line(tmp_path: Path, images: Path) -> None:
    # Prepare: a good first line, then garbage
    path = write_text(tmp_path / "caps.jsonl", '{"image": "c.png", "caption": "blue"}\nnot json\n')
    items = parse_pair_source(f"captions:{path}?images={images}").items()

    # Execute / Assert: the first item comes before the error
    assert next(items).id == "c.png"
    with pytest.raises(ValueError, match=r"line 2 is not valid JSON"):
        next(items)


def test_load_pairs_keeps_every_caption_and_loads_images_lazily(tmp_path: Path, images: Path) -> None:
    # Prepare
    path = write_jsonl(
        tmp_path / "caps.jsonl",
        [{"image": "val2014/b.jpg", "captions": ["green", "also green"]}, {"image": "c.png", "caption": "blue"}],
    )

    # Execute
    pairs = parse_pair_source(f"captions:{path}?images={images}").load_pairs(4)
    batch = pairs.images[torch.tensor([1])]

    # Assert
    assert pairs.captions == ("green", "also green", "blue")
    assert pairs.caption_image.tolist() == [0, 0, 1]
    assert batch.shape == (1, 3, 4, 4)
    assert tuple(int(v) for v in batch[0, :, 0, 0]) == BLUE


def test_load_pairs_reports_missing_image_files(tmp_path: Path, images: Path) -> None:
    path = write_jsonl(
        tmp_path / "caps.jsonl", [{"image": "c.png", "caption": "x"}, {"image": "gone.png", "caption": "y"}]
    )
    with pytest.raises(ValueError, match=r"caps\.jsonl: 1 of 2 image files are missing, first: .*gone\.png"):
        parse_pair_source(f"captions:{path}?images={images}").load_pairs(4)


def test_load_pairs_refuses_a_non_positive_image_size(tmp_path: Path, images: Path) -> None:
    path = write_jsonl(tmp_path / "caps.jsonl", [{"image": "c.png", "caption": "x"}])
    with pytest.raises(ValueError, match=r"image_size must be positive"):
        parse_pair_source(f"captions:{path}?images={images}").load_pairs(0)

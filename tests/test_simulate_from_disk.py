"""``creamfl simulate`` on data from disk: the paper's setting (a Karpathy public and test set, CIFAR-100
image clients with Dirichlet shares, an AG_NEWS text client, a Karpathy image+text client) from the
command line and from a TOML scenario file, the ``share`` option, and bad input refused in one line.

The fixture files are written by the tests: PNG and JPEG images, a Karpathy JSON with train and test
splits, CIFAR-100 pickles and an AG_NEWS CSV, all from generated scenes so the captions are English.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from creamfl.cli import main
from creamfl.data.formats import load_cifar100
from creamfl.data.scenes import Scenes
from creamfl.data.sources import parse_pair_source
from creamfl.data.specs import parse_data_spec
from creamfl.tokenizers import build_tokenizer
from tests.agent.data_files import scenes, write_ag_news, write_cifar100

SMALL_FLAGS = ["--rounds", "1", "--seed", "4", "--embed-dim", "16", "--server-image-widths", "8,16,32"]


@dataclass(frozen=True)
class DiskData:
    karpathy: Path
    images: Path
    cifar: Path
    ag_news: Path

    def public(self) -> str:
        return f"karpathy:{self.karpathy}?images={self.images}&split=train"

    def test(self) -> str:
        return f"karpathy:{self.karpathy}?images={self.images}&split=test"

    def client_flags(self) -> list[str]:
        return [
            *("--client", f"image=cifar100:{self.cifar}?share=0/2"),
            *("--client", f"image=cifar100:{self.cifar}?share=1/2"),
            *("--client", f"text=ag-news:{self.ag_news}"),
            *("--client", f"multimodal={self.public()}"),
        ]

    def flags(self, tokenizer: str = "trained:200") -> list[str]:
        return ["--public", self.public(), "--test", self.test(), *self.client_flags(), "--tokenizer", tokenizer]


def write_karpathy(root: Path, train: Scenes, test: Scenes) -> tuple[Path, Path]:
    """Train images as PNG under train2014/, test images as JPEG under val2014/, two captions each."""
    images = root / "images"
    entries = []
    for data, split, folder, suffix in ((train, "train", "train2014", "png"), (test, "test", "val2014", "jpg")):
        for index in range(len(data)):
            name = f"{split}-{index:03d}.{suffix}"
            path = images / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(data.images[index].numpy().transpose(1, 2, 0))).save(path)
            sentences = [{"raw": caption} for caption in data.captions[index]]
            entries.append({"filepath": folder, "filename": name, "split": split, "sentences": sentences})
    document = root / "dataset_coco.json"
    document.write_text(json.dumps({"images": entries}), encoding="utf-8")
    return document, images


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> DiskData:
    root = tmp_path_factory.mktemp("disk")
    document, images = write_karpathy(root / "coco", scenes(16, seed=1), scenes(8, seed=2))
    cifar = write_cifar100(root / "cifar-100-python", scenes(24, seed=3))
    ag_news = write_ag_news(root / "ag_news" / "train.csv", scenes(16, seed=4))
    return DiskData(document, images, cifar, ag_news)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["simulate", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def rounds_without_timing(path: Path) -> list[dict[str, Any]]:
    rounds: list[dict[str, Any]] = json.loads(path.read_text())["rounds"]
    for r in rounds:
        r.pop("seconds")
    return rounds


@pytest.fixture(scope="module")
def cli_run(disk: DiskData, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    """The paper's setting from the command line, one round (run once for the tests below)."""
    out = tmp_path_factory.mktemp("cli") / "run.json"
    log = io.StringIO()  # a module-scoped fixture cannot use capsys
    with contextlib.redirect_stderr(log):
        code = main(["simulate", *disk.flags(), *SMALL_FLAGS, "--json", str(out)])
    return code, log.getvalue(), out


def test_the_papers_setting_from_disk_runs_a_round_and_reports_metrics(cli_run: tuple[int, str, Path]) -> None:
    # Execute (the fixture ran it)
    code, log, out = cli_run

    # Assert
    assert code == 0
    written = json.loads(out.read_text())
    (only,) = written["rounds"]
    assert only["participants"] == ["image-0", "image-1", "text-0", "multimodal-0"]
    assert 0.0 <= only["rsum"] <= 200.0 and only["upload_bytes"] > 0
    assert set(only["ensemble_weights"]) == {"image", "text"}
    assert written["config"]["public_size"] == 16 and written["config"]["test_size"] == 8
    assert written["data"]["tokenizer"] == "trained:200" and len(written["data"]["clients"]) == 4
    assert "round 1: rsum" in log
    # Each text-bearing client's [UNK] share, once: the AG_NEWS texts share the public captions' words.
    assert log.count("[UNK]") == 2 and "text-0 (text-gru-s): AG_NEWS" in log
    assert "image-1 (image-cnn-m): CIFAR-100 train" in log and "share 1 of 2" in log


def test_a_toml_scenario_with_relative_paths_gives_the_same_results(
    disk: DiskData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: the same federation as a file next to the data, with paths relative to it. The
    # bundled WordPiece vocabulary, as tokenizers' WordPiece training is not reproducible yet
    # (huggingface/tokenizers#1794: ids follow hash-map order), so no two trained:V runs are alike.
    root = disk.karpathy.parent.parent
    coco = "karpathy:coco/dataset_coco.json?images=coco/images"
    scenario = root / "scenario.toml"
    scenario.write_text(
        f"""
public = "{coco}&split=train"
test = "{coco}&split=test"
tokenizer = "wordpiece-minilm"
rounds = 1
seed = 4
embed_dim = 16
server_image_widths = [8, 16, 32]

[[clients]]
modality = "image"
data = "cifar100:cifar-100-python?share=0/2"

[[clients]]
modality = "image"
data = "cifar100:cifar-100-python?share=1/2"
model = "image-cnn-m"

[[clients]]
modality = "text"
data = "ag-news:ag_news/train.csv"

[[clients]]
modality = "multimodal"
data = "{coco}&split=train"
""",
        encoding="utf-8",
    )
    from_file, from_flags = tmp_path / "scenario.json", tmp_path / "flags.json"

    # Execute
    file_code, _, _ = run_cli(["--scenario", str(scenario), "--json", str(from_file)], capsys)
    flags_code, _, _ = run_cli([*disk.flags("wordpiece-minilm"), *SMALL_FLAGS, "--json", str(from_flags)], capsys)

    # Assert
    assert file_code == flags_code == 0
    assert rounds_without_timing(from_file) == rounds_without_timing(from_flags)


def test_shares_are_disjoint_cover_the_file_and_follow_the_seed(disk: DiskData) -> None:
    # Prepare
    cifar = load_cifar100(disk.cifar, train=True)
    pairs = parse_pair_source(disk.public()).load_pairs(32)
    tokenizer = build_tokenizer("trained:200", pairs.captions)

    def rows(spec: str, data: Any, seed: int) -> list[list[int]]:
        shares = [parse_data_spec(spec.format(i=i)).share(seed) for i in range(3)]
        return [share.rows(data).tolist() for share in shares if share is not None]

    # Execute
    labelled = rows(f"cifar100:{disk.cifar}?share={{i}}/3&alpha=0.3", cifar, seed=7)
    again = rows(f"cifar100:{disk.cifar}?share={{i}}/3&alpha=0.3", cifar, seed=7)
    reseeded = rows(f"cifar100:{disk.cifar}?share={{i}}/3&alpha=0.3", cifar, seed=8)
    pinned = rows(f"cifar100:{disk.cifar}?share={{i}}/3&alpha=0.3&seed=7", cifar, seed=8)
    paired = rows(f"{disk.public()}&share={{i}}/3", pairs, seed=7)
    loaded = parse_data_spec(f"cifar100:{disk.cifar}?share=1/3&alpha=0.3").load(
        "image", tokenizer, image_size=32, seed=7
    )
    pair_share = parse_data_spec(f"{disk.public()}&share=2/3").load("multimodal", tokenizer, image_size=32, seed=7)

    # Assert
    for shares, total in ((labelled, len(cifar.labels)), (paired, pairs.num_images)):
        flat = [row for share in shares for row in share]
        assert sorted(flat) == list(range(total))  # every item once: disjoint and complete
    assert labelled == again and labelled == pinned and labelled != reseeded
    assert [len(share) for share in paired] == [6, 5, 5]  # IID: near-equal parts
    assert torch.equal(loaded.task.targets, cifar.labels[torch.tensor(labelled[1])])
    assert pair_share.samples == 5 and len(pair_share.texts) == 10  # both captions of each of its images
    assert pair_share.task.targets.shape[0] == 10


def test_a_client_whose_text_the_tokenizer_cannot_read_is_warned_about(
    disk: DiskData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: news in a script the public captions never use
    news = tmp_path / "news.csv"
    news.write_text("1,世界新闻,今天的新闻很多\n2,体育,球队赢了比赛\n", encoding="utf-8")
    client = ["--client", f"text=ag-news:{news}", "--strategy", "server-only", "--tokenizer", "trained:200"]

    # Execute
    code, _, err = run_cli(["--public", disk.public(), "--test", disk.test(), *client, *SMALL_FLAGS], capsys)

    # Assert
    assert code == 0
    assert "text-0 (text-gru-s): AG_NEWS" in err and "[UNK] 100.0% of" in err
    assert "warning: text-0: 100.0% of its tokens are [UNK] with trained:200" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--public", "parquet:/x", "--test", "parquet:/y"], "public set: source 'parquet:/x': unknown kind"),
        (["--public", "karpathy:/no/such.json?images=/x", "--test", "{test}"], "caption file /no/such.json does not"),
        (["--public", "{public}", "--test", "{test}", "--client", "audio={public}"], "unknown modality 'audio'"),
        (["--public", "{public}", "--test", "{test}", "--client", "text=cifar100:{cifar}"], "cifar100 data is image"),
        (["--public", "{public}", "--test", "{test}", "--client", "image=cifar100:{cifar}?share=2/2"], "0 <= I < K"),
        (["--public", "{public}", "--test", "{test}", "--client", "image"], "expected MODALITY=SPEC"),
        (["--public", "{public}", "--test", "{test}", "--tokenizer", "builtin-words"], "wordpiece-minilm or trained"),
        (["--public", "{public}", "--test", "{test}"], "needs the tokenizer wordpiece-minilm or trained:V"),
        (["--public", "{public}"], "needs both --public and --test"),
        (["--tokenizer", "trained:200"], "other tokenizers are for data from disk"),
        (["--public", "{public}", "--test", "{test}", "--public-size", "9"], "public_size describe(s) the built-in"),
        (["--public", "{public}", "--test", "{test}", "--client", "image=ag-news:/no.csv"], "ag-news data is text"),
        (["--public", "{public}", "--test", "{test}", "--client", "image=cifar100:/no/dir"], "/no/dir/train does not"),
        (["--scenario", "/no/such.toml"], "scenario file /no/such.toml does not exist"),
        (["--scenario", "{scenario}", "--public", "{public}"], "leave out --public, --test and --client"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    disk: DiskData, tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(f'public = "{disk.public()}"\ntest = "{disk.test()}"\n', encoding="utf-8")
    places = {"public": disk.public(), "test": disk.test(), "cifar": str(disk.cifar), "scenario": str(scenario)}
    args = [arg.format(**places) for arg in extra]
    if "--tokenizer" not in args and "needs the tokenizer" not in message:
        args += ["--tokenizer", "trained:200"]

    # Execute
    code, _, err = run_cli([*args, *SMALL_FLAGS], capsys)

    # Assert
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('public = "{public}"\ntest = "{test}"\ntokenizer = "trained:200"\nroundz = 2', "unknown setting(s) roundz"),
        ('public = "{public}"\ntest = "{test}"\ntokenizer = "trained:200"\nrounds = "many"', "rounds: Input should"),
        ('public = "{public}"\ntest = "{test}"\n[[clients]]\nmodality = "image"', "clients.0.data: Field required"),
    ],
)
def test_a_bad_scenario_file_is_one_line_and_exit_2(
    disk: DiskData, tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    scenario = tmp_path / "bad.toml"
    scenario.write_text(content.format(public=disk.public(), test=disk.test()), encoding="utf-8")

    # Execute
    code, _, err = run_cli(["--scenario", str(scenario)], capsys)

    # Assert
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_malformed_toml_exits_2_without_a_traceback(tmp_path: Path) -> None:
    # Prepare
    scenario = tmp_path / "bad.toml"
    scenario.write_text("public = [unclosed", encoding="utf-8")

    # Execute: a real process, so the exit status is the command's
    done = subprocess.run(
        [sys.executable, "-m", "creamfl.cli", "simulate", "--scenario", str(scenario)],
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Assert
    assert done.returncode == 2
    assert "not valid TOML" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1

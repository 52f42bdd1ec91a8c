"""The agent's public set from a registered dataset: shards and the tokenizer downloaded resumably from
a real HTTP server (ETag, Range, If-Range, injected cuts and corruption), hash-checked, cached across
restarts; the public set read lazily, shard by shard; the federation's tokenizer and its [UNK] share."""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, normalizers, pre_tokenizers, processors

from client_agent.agent import Agent, Member
from client_agent.coordinator_client import CoordinatorClient, RetryPolicy
from client_agent.coordinator_errors import IntegrityFailure
from client_agent.progress import Reporter
from client_agent.public_files import PublicFiles, shard_name, tokenizer_name
from client_agent.public_set import cached_names, federation_tokenizer, obtain_public_set
from client_agent.refusals import Refusals
from client_agent.state import Identity
from client_agent.stopping import Stopper
from creamfl.data.scenes import vocabulary
from creamfl.data.shards import PairItem, ShardFiles, dataset_sha256, decode_image, encode_shard
from creamfl.tokenizers import (
    SPECIALS,
    WordPieceTokenizer,
    load_tokenizer,
    tokenizer_json,
    train_wordpiece,
    unknown_share,
)
from shared_schemas.datasets import PublicSetManifest, ShardRef, TokenizerRef
from tests.agent.file_server import FileServer, file_server
from tests.agent.helpers import agent_settings

FEDERATION = {"id": "fed-shards", "join_token": "join-token"}
BASE = f"/api/v1/federations/{FEDERATION['id']}"
FAST = RetryPolicy(retry_for_s=20.0, initial_s=0.01, max_backoff_s=0.05)
IMAGE_SIZE = 24  # the built-in private scenes are at least 24 pixels wide
LOG = "client_agent.test.shards"


@pytest.fixture
def server() -> Iterator[FileServer]:
    with file_server() as running:
        yield running


def items(count: int, first: int) -> list[PairItem]:
    """Items with distinct solid-colour PNG images and two captions each (the first names the item)."""
    made = []
    for number in range(first, first + count):
        buffer = io.BytesIO()
        Image.new("RGB", (6, 6), (number * 20 % 256, 255 - number * 7 % 256, number * 3 % 256)).save(buffer, "PNG")
        captions = (f"a red circle left of a blue square {number}", f"second caption {number}")
        made.append(PairItem(id=f"item-{number}", image=buffer.getvalue(), captions=captions))
    return made


def shard_bytes(*counts: int) -> list[tuple[bytes, list[PairItem]]]:
    shards, first = [], 0
    for count in counts:
        group = items(count, first)
        shards.append((encode_shard(group), group))
        first += count
    return shards


def ref(data: bytes, count: int) -> ShardRef:
    return ShardRef(sha256=hashlib.sha256(data).hexdigest(), size=len(data), items=count)


def serve_shards(server: FileServer, shards: list[tuple[bytes, list[PairItem]]]) -> list[ShardRef]:
    refs = [ref(data, len(group)) for data, group in shards]
    for (data, _), shard in zip(shards, refs, strict=True):
        server.files[shard_path(shard.sha256)] = (data, shard.sha256)
    return refs


def shard_path(sha256: str) -> str:
    return f"{BASE}/public-set/shards/{sha256}"


def serve_manifest(
    server: FileServer, refs: list[ShardRef], tokenizer: TokenizerRef | None = None
) -> PublicSetManifest:
    manifest = PublicSetManifest(
        kind="dataset",
        embed_dim=16,
        image_size=IMAGE_SIZE,
        size=sum(r.items for r in refs),
        sha256=dataset_sha256([r.sha256 for r in refs]),
        tokenizer=tokenizer or TokenizerRef(choice="builtin-words"),
        shards=refs,
    )
    server.documents[f"{BASE}/public-set"] = manifest.model_dump(mode="json")
    return manifest


def serve_tokenizer(server: FileServer, text: str, choice: str) -> TokenizerRef:
    data = text.encode()
    sha = hashlib.sha256(data).hexdigest()
    server.files[f"{BASE}/public-set/tokenizer"] = (data, sha)
    return TokenizerRef(choice=choice, sha256=sha, size=len(data))


def wordpiece(words: Sequence[str]) -> WordPieceTokenizer:
    """A BERT-style WordPiece tokenizer of exactly ``words`` (no alphabet: any other word is [UNK])."""
    vocab = {token: number for number, token in enumerate(dict.fromkeys([*SPECIALS, *words]))}
    tokenizer = HFTokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    boundaries = [("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=boundaries)
    return WordPieceTokenizer(tokenizer)


def public_files(server: FileServer, cache_dir: Path, tmp_path: Path) -> PublicFiles:
    """What a (re)started agent downloads with: a fresh client over a fresh connection pool."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    client = CoordinatorClient(httpx.Client(base_url=server.url), FEDERATION["id"], token="client-token", retry=FAST)
    settings = agent_settings(server.url, FEDERATION, "multimodal", tmp_path / "state")
    reporter = Reporter("plain", logger=logging.getLogger(LOG))
    return PublicFiles(client, Refusals(settings), cache_dir, reporter, Stopper())


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- downloads -------------------------------------------------------------------------------------


def test_shards_are_downloaded_whole_checked_and_reported(
    server: FileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    refs = serve_shards(server, shard_bytes(3, 2))
    files = public_files(server, tmp_path / "public", tmp_path)
    caplog.set_level(logging.INFO, logger=LOG)

    # Execute
    paths = files.shards(refs)

    # Assert
    assert paths == [tmp_path / "public" / shard_name(r.sha256) for r in refs]
    assert [sha_of(p) for p in paths] == [r.sha256 for r in refs]
    for shard in refs:
        (answer,) = server.answers(shard_path(shard.sha256))
        assert (answer.status, answer.range, answer.body_bytes) == (200, None, shard.size)
    assert not list((tmp_path / "public").glob("*.part"))
    total = sum(r.size for r in refs)
    assert f"public set shards=2 started total={total} unit=bytes" in caplog.text
    assert "public set shards=2 done" in caplog.text


def test_a_cut_download_resumes_with_a_range_request(server: FileServer, tmp_path: Path) -> None:
    # Prepare
    (shard,) = serve_shards(server, shard_bytes(4))
    half = shard.size // 2
    server.cut[shard_path(shard.sha256)] = [half]
    files = public_files(server, tmp_path / "public", tmp_path)

    # Execute
    (path,) = files.shards([shard])

    # Assert
    assert sha_of(path) == shard.sha256
    first, second = server.answers(shard_path(shard.sha256))
    assert (first.status, first.range, first.body_bytes) == (200, None, half)
    assert (second.status, second.range, second.if_range) == (206, f"bytes={half}-", f'"{shard.sha256}"')
    assert first.body_bytes + second.body_bytes == shard.size  # no byte fetched twice


def test_a_restarted_agent_resumes_from_its_part_file(server: FileServer, tmp_path: Path) -> None:
    # Prepare: a killed agent left the first half
    ((data, _),) = shards = shard_bytes(4)
    (shard,) = serve_shards(server, shards)
    half = shard.size // 2
    cache = tmp_path / "public"
    cache.mkdir()
    (cache / f"{shard_name(shard.sha256)}.part").write_bytes(data[:half])

    # Execute
    (path,) = public_files(server, cache, tmp_path).shards([shard])

    # Assert
    assert path.read_bytes() == data
    (answer,) = server.answers(shard_path(shard.sha256))
    assert (answer.status, answer.range, answer.body_bytes) == (206, f"bytes={half}-", shard.size - half)


def test_a_whole_answer_to_a_range_request_starts_the_file_over(server: FileServer, tmp_path: Path) -> None:
    # Prepare: the part is of another version of the file (its ETag differs), so If-Range brings it whole
    ((data, _),) = shards = shard_bytes(4)
    (shard,) = serve_shards(server, shards)
    server.files[shard_path(shard.sha256)] = (data, "0" * 64)
    cache = tmp_path / "public"
    cache.mkdir()
    (cache / f"{shard_name(shard.sha256)}.part").write_bytes(b"\x00" * 100)

    # Execute
    (path,) = public_files(server, cache, tmp_path).shards([shard])

    # Assert
    assert path.read_bytes() == data
    (answer,) = server.answers(shard_path(shard.sha256))
    assert (answer.status, answer.range, answer.body_bytes) == (200, "bytes=100-", shard.size)


def test_a_corrupt_shard_is_downloaded_once_more(server: FileServer, tmp_path: Path) -> None:
    # Prepare
    (shard,) = serve_shards(server, shard_bytes(4))
    server.corrupt[shard_path(shard.sha256)] = 1

    # Execute
    (path,) = public_files(server, tmp_path / "public", tmp_path).shards([shard])

    # Assert
    assert sha_of(path) == shard.sha256
    assert [a.body_bytes for a in server.answers(shard_path(shard.sha256))] == [shard.size, shard.size]


def test_a_shard_corrupt_twice_fails_naming_it(server: FileServer, tmp_path: Path) -> None:
    # Prepare
    (shard,) = serve_shards(server, shard_bytes(4))
    server.corrupt[shard_path(shard.sha256)] = 2
    cache = tmp_path / "public"

    # Execute
    with pytest.raises(IntegrityFailure) as failed:
        public_files(server, cache, tmp_path).shards([shard])

    # Assert
    message = str(failed.value)
    assert f"public-set shard {shard.sha256}" in message and "sha256" in message and "\n" not in message
    assert len(server.answers(shard_path(shard.sha256))) == 2
    assert list(cache.iterdir()) == []  # neither the bad bytes nor a part are kept


def test_cached_shards_cost_no_request_after_a_restart_and_are_checked_again(
    server: FileServer, tmp_path: Path
) -> None:
    # Prepare
    refs = serve_shards(server, shard_bytes(3, 2))
    cache = tmp_path / "public"
    paths = public_files(server, cache, tmp_path).shards(refs)
    untouched = len(server.served)

    # Execute: a restart, then a restart after the second file was damaged on disk
    again = public_files(server, cache, tmp_path).shards(refs)
    requests_after_restart = len(server.served) - untouched
    paths[1].write_bytes(b"damaged")
    repaired = public_files(server, cache, tmp_path).shards(refs)

    # Assert
    assert again == paths and requests_after_restart == 0
    assert [sha_of(p) for p in repaired] == [r.sha256 for r in refs]
    assert [a.path for a in server.served[untouched:]] == [shard_path(refs[1].sha256)]


def test_files_the_manifest_no_longer_names_leave_the_cache(server: FileServer, tmp_path: Path) -> None:
    # Prepare: an earlier dataset's shard (and a part), a built-in cache, this manifest's shard and part
    (kept,) = serve_shards(server, shard_bytes(2))
    tokenizer = TokenizerRef(choice="wordpiece-minilm", sha256="b" * 64, size=10)
    manifest = serve_manifest(server, [kept], tokenizer)
    cache = tmp_path / "public"
    cache.mkdir()
    names = [
        shard_name("a" * 64),
        f"{shard_name('c' * 64)}.part",
        f"public-{'d' * 64}.safetensors",
        shard_name(kept.sha256),
        tokenizer_name("b" * 64),
        f"{tokenizer_name('b' * 64)}.part",
    ]
    for name in names:
        (cache / name).write_bytes(b"x")

    # Execute
    public_files(server, cache, tmp_path).keep_only(cached_names(manifest))

    # Assert
    assert sorted(p.name for p in cache.iterdir()) == sorted(names[3:])


# --- the public set and the tokenizer --------------------------------------------------------------


def test_the_dataset_public_set_reads_the_rows_asked_for(server: FileServer, tmp_path: Path) -> None:
    # Prepare: 12 items in shards of 4, 3 and 5
    shards = shard_bytes(4, 3, 5)
    manifest = serve_manifest(server, serve_shards(server, shards))
    every = [item for _, group in shards for item in group]
    tokenizer = load_tokenizer("builtin-words", None)
    rows = torch.tensor([11, 0, 5, 4, 9, 1])

    # Execute
    public = obtain_public_set(manifest, public_files(server, tmp_path / "public", tmp_path), tokenizer)
    images = public.images[rows]
    token_ids = public.token_ids[rows]

    # Assert
    assert len(public) == 12 and public.sha256 == manifest.sha256 and public.image_size == IMAGE_SIZE
    expected = torch.stack([decode_image(every[r].image, IMAGE_SIZE, name=every[r].id) for r in rows.tolist()])
    assert images.dtype == torch.uint8 and torch.equal(images, expected)
    assert torch.equal(token_ids, tokenizer.encode([every[r].captions[0] for r in rows.tolist()]))
    assert isinstance(public.images, ShardFiles) and len(public.images.open_shards) <= 2


def test_shard_files_keep_a_couple_of_shards_open(tmp_path: Path) -> None:
    # Prepare
    shards = shard_bytes(2, 2, 2)
    paths = []
    for number, (data, _) in enumerate(shards):
        paths.append(tmp_path / f"{number}.shard")
        paths[-1].write_bytes(data)
    files = ShardFiles(paths, [2, 2, 2], IMAGE_SIZE)

    # Execute
    files.captions(torch.tensor([0]))
    files.captions(torch.tensor([2]))
    files.captions(torch.tensor([0, 4]))  # shard 2 opens: shard 1, the least recently used, closes

    # Assert
    assert files.open_shards == (0, 2)
    assert files.captions(torch.tensor([5, 3])) == [shards[2][1][1].captions, shards[1][1][1].captions]


def test_the_federation_tokenizer_is_downloaded_and_loaded(server: FileServer, tmp_path: Path) -> None:
    # Prepare
    trained = train_wordpiece([" ".join(vocabulary())] * 4, 120)
    text = tokenizer_json(trained)
    assert text is not None
    tokenizer_ref = serve_tokenizer(server, text, "trained:120")
    texts = ["a red circle left of a blue square", "zebra"]

    # Execute
    tokenizer = federation_tokenizer(tokenizer_ref, public_files(server, tmp_path / "public", tmp_path))

    # Assert
    assert tokenizer.vocab_size == trained.vocab_size
    assert torch.equal(tokenizer.encode(texts), trained.encode(texts))
    assert (tmp_path / "public" / tokenizer_name(str(tokenizer_ref.sha256))).is_file()


def test_the_builtin_words_need_no_download(server: FileServer, tmp_path: Path) -> None:
    # Execute
    tokenizer = federation_tokenizer(
        TokenizerRef(choice="builtin-words"), public_files(server, tmp_path / "public", tmp_path)
    )

    # Assert
    assert tokenizer.vocab_size == load_tokenizer("builtin-words", None).vocab_size
    assert server.served == []


# --- the agent joining a federation whose public set is a dataset -----------------------------------


def join(server: FileServer, tmp_path: Path, modality: str) -> Member:
    """An agent (enrolled already) joining the federation the server stands in for."""
    settings = agent_settings(server.url, FEDERATION, modality, tmp_path / "state", retry_for_s=10.0)
    agent = Agent(settings, httpx.Client(base_url=server.url), logger=logging.getLogger(LOG))
    agent.client.token = "client-token"
    identity = Identity(server.url, FEDERATION["id"], "client-1", "client-token", "gw", [modality], "m")
    with agent.prepare() as setup:
        return agent.join(setup, identity)


@pytest.mark.parametrize(
    ("corpus", "modality"),
    # A text client's data is tokenized again; a pair client's is read again at the public image size.
    [("two words", "text"), ("the built-in words", "multimodal")],
)
def test_joining_takes_the_federation_tokenizer_and_reports_the_unknown_share(
    server: FileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, corpus: str, modality: str
) -> None:
    # Prepare: a WordPiece vocabulary of two words knows little of the built-in captions
    trained = wordpiece(["red", "circle"] if corpus == "two words" else vocabulary())
    text = tokenizer_json(trained)
    assert text is not None
    serve_manifest(server, serve_shards(server, shard_bytes(3)), serve_tokenizer(server, text, "trained:100"))
    caplog.set_level(logging.INFO, logger=LOG)

    # Execute
    member = join(server, tmp_path, modality)

    # Assert
    data, tokenizer = member.data, member.tokenizer
    assert tokenizer.vocab_size == trained.vocab_size
    token_ids = data.task.inputs if modality == "text" else data.task.targets
    assert isinstance(token_ids, torch.Tensor) and torch.equal(token_ids, trained.encode(data.texts))
    assert data.image_size == (None if modality == "text" else IMAGE_SIZE)
    share = unknown_share(trained, data.texts).share
    assert member.unk_share == pytest.approx(share)
    assert f"private text tokenizer=trained:100 unk_share={share:.4f}" in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if corpus == "two words":
        assert share > 0.05
        (warning,) = warnings
        assert f"{100 * share:.1f}%" in warning and "wordpiece-minilm" in warning and "trained:V" in warning
    else:
        assert share <= 0.05 and warnings == []


def test_an_image_client_has_no_unknown_share(server: FileServer, tmp_path: Path) -> None:
    # Prepare
    serve_manifest(server, serve_shards(server, shard_bytes(3)))

    # Execute
    member = join(server, tmp_path, "image")

    # Assert
    assert member.unk_share is None
    assert len(member.public) == 3

"""Tokenizer training, adoption of existing tokenizers, metadata and coverage."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from itertools import islice
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from lmforge.cli import main
from lmforge.config import ConfigError
from lmforge.corpora import get_corpus
from lmforge.tokenize.tokenizer import load_tokenizer, make_tokenizer_config, train_tokenizer
from tests.utils import minilm_dir

from .conftest import read_texts

SMALL = {"wordpiece": 2000, "bpe": 1200, "bpe-bert": 5000, "unigram": 3000}


@pytest.fixture(scope="module")
def small_train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,000 People's Daily sentences as a plain text file (unigram training is slow on more)."""
    path = tmp_path_factory.mktemp("small") / "pd.txt"
    lines = [r.text for r in islice(get_corpus("peoples-daily").records(), 1000)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(small_train_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kinds")
    dirs = {}
    for kind, size in SMALL.items():
        dirs[kind] = root / kind
        train_tokenizer(make_tokenizer_config(
            {"data": str(small_train_file), "kind": kind, "vocab_size": size, "out": str(dirs[kind]), "progress": False}
        ))
    return dirs


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_decode_encode_round_trips(kind: str, trained: dict[str, Path], small_train_file: Path, pd_prepared: Path) -> None:
    tokenizer = Tokenizer.from_file(str(trained[kind] / "tokenizer.json"))
    unk = tokenizer.token_to_id("[UNK]") if kind in ("wordpiece", "bpe-bert") else tokenizer.token_to_id("<unk>")
    # sentences the vocabulary was trained on, and unseen validation sentences (skipped only if they hold an unknown)
    texts = small_train_file.read_text(encoding="utf-8").splitlines()[:100]
    texts += [r["text"] for r in read_texts(pd_prepared / "validation.jsonl")[:100]]
    checked = 0
    for text in texts:
        ids = tokenizer.encode(text).ids
        if unk is not None and unk in ids:
            continue  # a character never seen in training cannot come back
        decoded = tokenizer.decode(ids)
        text = unicodedata.normalize("NFKC", text)  # tokenizers normalise as `data prepare` does (configurable)
        if kind == "wordpiece":
            # BERT's decoder joins word pieces with spaces (中 国); the lower-cased characters are all kept
            assert decoded.replace(" ", "") == text.lower().replace(" ", "")
        elif kind == "bpe-bert":
            assert decoded == unicodedata.normalize("NFKC", unicodedata.normalize("NFD", text.lower()))
        else:
            assert decoded == text
        checked += 1
    assert checked >= 100


def test_wordpiece_is_bert(trained: dict[str, Path]) -> None:
    tokenizer = Tokenizer.from_file(str(trained["wordpiece"] / "tokenizer.json"))
    assert [tokenizer.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    encoding = tokenizer.encode("中国人民", "Café au LAIT")
    assert encoding.tokens[:6] == ["[CLS]", "中", "国", "人", "民", "[SEP]"]  # each CJK character on its own
    assert encoding.tokens[-1] == "[SEP]" and encoding.type_ids[:6] == [0] * 6 and encoding.type_ids[-1] == 1
    assert tokenizer.normalizer.normalize_str("Café au LAIT") == "cafe au lait"  # BERT uncased by default


def test_bpe_is_byte_level_without_unknowns(trained: dict[str, Path]) -> None:
    meta = json.loads((trained["bpe"] / "meta.json").read_text())
    tokenizer = Tokenizer.from_file(str(trained["bpe"] / "tokenizer.json"))
    assert meta["special_tokens"]["unk"] is None and meta["special_tokens"]["eos"] == tokenizer.token_to_id("<|endoftext|>")
    text = "Ünïcödé ☃ and 𝔘𝔫𝔦 never seen in People's Daily"  # characters outside the training text
    assert tokenizer.decode(tokenizer.encode(text).ids) == unicodedata.normalize("NFKC", text)


def test_bpe_bert_gives_a_piece_one_id_wherever_it_occurs(trained: dict[str, Path]) -> None:
    tokenizer = Tokenizer.from_file(str(trained["bpe-bert"] / "tokenizer.json"))
    meta = json.loads((trained["bpe-bert"] / "meta.json").read_text())
    assert meta["kind"] == "bpe-bert" and load_tokenizer(trained["bpe-bert"]).kind == "bpe-bert"
    assert [tokenizer.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert meta["special_tokens"]["mask"] == 4 and meta["special_tokens"]["cls"] == 2
    assert not any(t.startswith("##") for t in tokenizer.get_vocab())
    run = "中国人民今天在北京举行了盛大的庆祝活动"
    pieces = tokenizer.encode(run, add_special_tokens=False)
    assert "".join(pieces.tokens) == run and any(len(t) > 1 for t in pieces.tokens)
    for token, token_id in zip(pieces.tokens, pieces.ids):  # WordPiece: 中国 alone, ##中国 inside a run
        assert tokenizer.encode(token, add_special_tokens=False).ids == [token_id]
    encoding = tokenizer.encode("中国人民。", "Café")
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]" and encoding.type_ids[-1] == 1
    assert "。" in encoding.tokens  # punctuation is its own piece
    # a space is kept as ▁ at the start of the next word (decoded back to a space), not dropped
    assert [w for w, _ in tokenizer.pre_tokenizer.pre_tokenize_str("我们 在北京。")] == ["我们", "▁在北京", "。"]


def test_options_lowercase_min_frequency_special_tokens(small_train_file: Path, tmp_path: Path) -> None:
    def train(name: str, **options) -> Tokenizer:
        layer = {"data": str(small_train_file), "kind": "bpe", "vocab_size": 3000, "out": str(tmp_path / name), "progress": False}
        train_tokenizer(make_tokenizer_config(layer, options))
        return Tokenizer.from_file(str(tmp_path / name / "tokenizer.json"))

    rare = train("rare", min_frequency=50, special_tokens=["[NUM]"], lowercase=True)
    common = train("common", min_frequency=2)
    assert rare.get_vocab_size() < common.get_vocab_size()  # fewer pairs pass a higher minimum frequency
    assert rare.encode("x [NUM] y").tokens.count("[NUM]") == 1  # a special token is never split
    assert rare.decode(rare.encode("ABC").ids) == "abc"


def test_wordpiece_can_keep_chinese_words_whole(small_train_file: Path, trained: dict[str, Path], tmp_path: Path) -> None:
    """split_cjk=false learns multi-character Chinese pieces: fewer tokens per text, same round trip."""
    train_tokenizer(make_tokenizer_config({"data": str(small_train_file), "kind": "wordpiece", "vocab_size": 10000,
                                           "split_cjk": False, "out": str(tmp_path), "progress": False}))
    words = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    chars = Tokenizer.from_file(str(trained["wordpiece"] / "tokenizer.json"))
    text = "中国人民今天在北京举行了盛大的庆祝活动。"
    assert all(len(t) == 1 or t == "[UNK]" for t in chars.encode(text, add_special_tokens=False).tokens)
    pieces = [t.removeprefix("##") for t in words.encode(text, add_special_tokens=False).tokens]
    assert any(len(p) > 1 for p in pieces) and "".join(pieces) == text
    lines = small_train_file.read_text(encoding="utf-8").splitlines()[:200]
    assert sum(len(e.ids) for e in words.encode_batch(lines)) < 0.8 * sum(len(e.ids) for e in chars.encode_batch(lines))


def test_meta_hash_coverage_and_transformers(wordpiece_dir: Path, pd_prepared: Path) -> None:
    transformers = pytest.importorskip("transformers")  # in the test extra; importorskip only for a clear message
    meta = json.loads((wordpiece_dir / "meta.json").read_text())
    assert meta["hash"] == hashlib.sha256((wordpiece_dir / "tokenizer.json").read_bytes()).hexdigest()
    assert meta["kind"] == "wordpiece" and meta["special_tokens"]["mask"] == 4
    coverage = json.loads((wordpiece_dir / "coverage.json").read_text())
    assert coverage["split"] == "validation" and 0 <= coverage["unknown_token_rate"] < 0.01
    assert coverage["documents"] == len(read_texts(pd_prepared / "validation.jsonl"))
    assert 0.9 < coverage["tokens_per_char"] < 1.1  # Chinese: about one token per character

    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(wordpiece_dir / "tokenizer.json"))
    reference = Tokenizer.from_file(str(wordpiece_dir / "tokenizer.json"))
    text = read_texts(pd_prepared / "validation.jsonl")[0]["text"]
    assert fast(text)["input_ids"] == reference.encode(text).ids
    loaded = transformers.PreTrainedTokenizerFast.from_pretrained(str(wordpiece_dir))
    assert (loaded.pad_token_id, loaded.mask_token_id, loaded.cls_token_id) == (0, 4, 2)


def test_vocab_txt_matches_the_packaged_bert_tokenizer() -> None:
    model_dir = minilm_dir()
    ours = load_tokenizer(model_dir / "vocab.txt").tokenizer
    reference = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    reference.no_truncation()
    reference.no_padding()
    lines = [line for line in (model_dir / "README.md").read_text(encoding="utf-8").splitlines() if len(line) > 30]
    assert len(lines) > 20
    for line in lines:
        assert ours.encode(line).ids == reference.encode(line).ids, line


def test_cli_adopts_an_existing_tokenizer(pd_prepared: Path, wordpiece_dir: Path, tmp_path: Path) -> None:
    source = minilm_dir() / "tokenizer.json"
    code = main(["tokenizer", "train", "--from", str(source), "--data", str(pd_prepared), "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["kind"] == "wordpiece" and meta["vocab_size"] == 30522
    # adopted as it is, except its own fixed padding and truncation at 128 (lmforge's max_length governs)
    shipped, adopted = json.loads(source.read_text()), json.loads((tmp_path / "tokenizer.json").read_text())
    assert adopted["padding"] is None and adopted["truncation"] is None
    assert {k: v for k, v in adopted.items() if k not in meta["removed"]} == {
        k: v for k, v in shipped.items() if k not in meta["removed"]}
    assert meta["removed"]["padding"]["strategy"] == {"Fixed": 128}
    # the coverage report shows why to train on your own corpus: English BERT lacks many Chinese characters
    ours = json.loads((wordpiece_dir / "coverage.json").read_text())
    assert meta["coverage"]["unknown_token_rate"] > 0.1 and ours["unknown_token_rate"] < 0.01


def test_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="min_frequency"):
        make_tokenizer_config({"kind": "unigram", "min_frequency": 3})
    with pytest.raises(ConfigError, match="data not found"):
        train_tokenizer(make_tokenizer_config({"data": str(tmp_path / "nope.txt"), "out": str(tmp_path / "t")}))
    small = tmp_path / "small.txt"
    small.write_text("".join(r.text + "\n" for r in islice(get_corpus("peoples-daily").records(), 50)), encoding="utf-8")
    with pytest.raises(ConfigError, match="not large enough.*vocab_size=100"):
        train_tokenizer(make_tokenizer_config({"data": str(small), "kind": "unigram", "vocab_size": 100, "out": str(tmp_path / "u")}))
    with pytest.raises(ConfigError, match="no DONE marker"):
        train_tokenizer(make_tokenizer_config({"data": str(tmp_path), "out": str(tmp_path / "t")}))
    (tmp_path / "DONE").write_text("{}")
    with pytest.raises(ConfigError, match="DONE: format_version None"):
        train_tokenizer(make_tokenizer_config({"data": str(tmp_path), "out": str(tmp_path / "t")}))
    (tmp_path / "DONE").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(ConfigError, match="no train.jsonl"):
        train_tokenizer(make_tokenizer_config({"data": str(tmp_path), "out": str(tmp_path / "t")}))
    (tmp_path / "bad.json").write_text("{}")
    assert main(["tokenizer", "train", "--from", str(tmp_path / "bad.json"), "--out", str(tmp_path / "t")]) == 2
    assert "bad.json" in capsys.readouterr().err


def test_one_corpus_and_config_train_one_wordpiece(small_train_file, tmp_path):
    """The Rust trainer appends the '##x' forms in hash-set order, different in every run; train_tokenizer
    reassigns them in character order, so two trainings give the same ids (and the same hash)."""
    files = []
    for k in range(3):
        out = tmp_path / f"wp{k}"
        train_tokenizer(make_tokenizer_config({"data": str(small_train_file), "kind": "wordpiece",
                                               "vocab_size": SMALL["wordpiece"], "out": str(out), "progress": False}))
        files.append(load_tokenizer(out / "tokenizer.json"))
    assert files[0].tokenizer.get_vocab() == files[1].tokenizer.get_vocab() == files[2].tokenizer.get_vocab()
    assert files[0].hash == files[1].hash == files[2].hash

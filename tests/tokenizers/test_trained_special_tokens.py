"""The tokenizer `npplm train` trains for each family adds that family's special tokens, as
its published tokenizer does, and once saved reads the same in npplm.load_tokenizer,
tokenizers' Tokenizer.from_file and transformers' AutoTokenizer: ids, token type ids and
the roles of the special tokens, for texts and pairs, with and without special tokens."""

import functools

import pytest

from npplm import load_tokenizer
from npplm.tokenizers import (
    templates,
    train_byte_level_bpe,
    train_sentencepiece_bpe,
    train_unigram,
    train_wordpiece,
)
from npplm.tokenizers.base import SPECIAL_TOKEN_ROLES, parse_template
from npplm.training.data import stdlib_documents
from npplm.training.recipe import EOT, FAMILIES, train_tokenizer

VOCAB_SIZE = 400  # a few hundred ids: each family trains in well under a second

# What each family's published tokenizer adds ("A", "B": the texts' ids; ":1" type id 1).
LAYOUTS = {
    "gpt": ("A", "A B:1"),
    "llama": ("<s> A", "<s> A <s>:1 B:1"),
    "bert": ("[CLS] A [SEP]", "[CLS] A [SEP] B:1 [SEP]:1"),
    "roberta": ("<s> A </s>", "<s> A </s> </s> B </s>"),
    "albert": ("[CLS] A [SEP]", "[CLS] A [SEP] B:1 [SEP]:1"),
    "t5": ("A </s>", "A </s> B </s>"),
    "glm": ("A", "A B:1"),
}
# (bos_token, eos_token) of each: what `npplm generate` stops at, and chat templates use.
BOS_EOS = {"gpt": (EOT, EOT), "llama": ("<s>", "</s>"), "bert": (None, None),
           "roberta": ("<s>", "</s>"), "albert": ("[CLS]", "[SEP]"), "t5": (None, "</s>"),
           "glm": (None, EOT)}

TEXTS = [
    "def f(x):\n    return x ** 2  # square",
    "Hello, world! It's 3:45pm.",
    "   leading and trailing spaces   ",
    "",
    "tabs\tand\nnew\n\nlines",
    "naïve café, ünïcödé 北京",
    "special lookalikes: <s> </s> [CLS] [SEP] [MASK] <mask> <pad> <unk> <|endoftext|>",
]
PAIRS = list(zip(TEXTS, TEXTS[1:]))


@functools.cache
def training_lines():
    """Documents cut into lines, line ends kept, as the recipe gives the trainers."""
    return [line for doc in stdlib_documents(50_000) for line in doc.splitlines(keepends=True)]


@functools.cache
def trained(family):
    """The family's tokenizer, trained by the recipe itself."""
    return train_tokenizer(FAMILIES[family].tokenizer, stdlib_documents(50_000), VOCAB_SIZE,
                           log=lambda *_: None)


def expected(tokenizer, layout, text, pair=None):
    """(ids, token type ids) of a text or pair laid out as `layout` says."""
    ids, type_ids = [], []
    for name, type_id in parse_template(layout):
        if name in ("A", "B"):
            part = tokenizer.encode(text if name == "A" else pair, add_special_tokens=False).ids
        else:
            part = [tokenizer.token_to_id(name)]
        ids += part
        type_ids += [type_id] * len(part)
    return ids, type_ids


@pytest.mark.parametrize("family", list(LAYOUTS))
def test_trained_tokenizer_adds_the_published_special_tokens(family, tmp_path):
    trained(family).save(tmp_path)
    ours = load_tokenizer(tmp_path)
    single, pair = LAYOUTS[family]
    for text in TEXTS:
        got = ours.encode(text)
        assert (got.ids, got.token_type_ids) == expected(ours, single, text), text
    for a, b in PAIRS:
        got = ours.encode(a, b)
        assert (got.ids, got.token_type_ids) == expected(ours, pair, a, b), (a, b)
    assert (ours.bos_token, ours.eos_token) == BOS_EOS[family]
    assert ours == trained(family)  # load_tokenizer(save(tok)) == tok, roles included


@pytest.mark.parametrize("family", list(LAYOUTS))
def test_saved_tokenizer_reads_the_same_in_tokenizers_and_transformers(family, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    trained(family).save(tmp_path)
    ours = load_tokenizer(tmp_path)
    theirs = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for a, b in [(text, None) for text in TEXTS] + PAIRS:
        for add in (True, False):
            got = ours.encode(a, b, add_special_tokens=add)
            them = theirs.encode(a, b, add_special_tokens=add)
            assert (got.ids, got.token_type_ids) == (them.ids, them.type_ids), (a, b, add)
            for skip in (False, True):
                assert ours.decode(got.ids, skip) == theirs.decode(got.ids, skip), (a, b)
            if b == "":  # transformers takes an empty second text for none ("if text_pair")
                continue
            hf = auto(a, b, add_special_tokens=add, return_token_type_ids=True)
            assert (got.ids, got.token_type_ids) == (hf["input_ids"], hf["token_type_ids"])
    assert {role: getattr(ours, role) for role in SPECIAL_TOKEN_ROLES} == \
        {role: getattr(auto, role) for role in SPECIAL_TOKEN_ROLES}
    special_ids = {t.id for t in ours.added_tokens if t.special}
    assert special_ids == {i for i, t in theirs.get_added_tokens_decoder().items() if t.special}
    assert special_ids == {i for i, t in auto.added_tokens_decoder.items() if t.special}


def test_trained_roberta_tokenizer_adds_s_and_end_once_loaded(tmp_path):
    trained("roberta").save(tmp_path)
    ours = load_tokenizer(tmp_path)
    a, b = (ours.encode(t, add_special_tokens=False).ids for t in ("x = 1", "y = 2"))
    s, end = ours.token_to_id("<s>"), ours.token_to_id("</s>")
    assert ours.encode("x = 1").ids == [s, *a, end]
    assert ours.encode("x = 1", "y = 2").ids == [s, *a, end, end, *b, end]
    assert (ours.bos_token, ours.eos_token) == ("<s>", "</s>")


@pytest.mark.parametrize("family", ["gpt", "llama", "bert"])  # the three tokenizer classes
def test_roles_are_none_without_tokenizer_config(family, tmp_path):
    trained(family).save(tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()
    (tmp_path / "vocab.txt").unlink(missing_ok=True)
    ours = load_tokenizer(tmp_path)
    assert (ours.bos_token, ours.eos_token) == (None, None)


def test_trainers_default_to_their_old_templates():
    lines = training_lines()[:2000]
    gpt = train_byte_level_bpe(lines, 300)
    assert (gpt.single, gpt.pair) == ((("$A", 0),), (("$A", 0), ("$B", 1)))
    assert gpt.special_tokens_map == {}
    llama = train_sentencepiece_bpe(lines, 300)
    assert llama.single == (("<s>", 0), ("$A", 0)) and llama.bos_token is None
    t5 = train_unigram(lines, 200)
    assert t5.single == (("$A", 0), ("</s>", 0)) and t5.pad_token == "<pad>"
    assert train_wordpiece(lines, 200).single == templates.BERT.single


def test_parse_template_reads_tokenizers_shorthand():
    assert parse_template("[CLS] $A [SEP] $B:1 [SEP]:1") == (
        ("[CLS]", 0), ("$A", 0), ("[SEP]", 0), ("$B", 1), ("[SEP]", 1))
    assert parse_template("<x:y> $A") == (("<x:y>", 0), ("$A", 0))


def test_a_role_must_be_in_the_vocabulary():
    with pytest.raises(ValueError, match="mask_token"):
        train_byte_level_bpe(training_lines()[:200], 300, special_tokens=(EOT,),
                             template=templates.GLM)

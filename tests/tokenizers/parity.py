"""What the tokenizer parity tests share: a varied corpus, loading one tokenizer.json in
both libraries, and comparing decode's defaults with transformers'.

The corpus: English, Chinese, Japanese, Korean, accented and combining Latin, Greek,
emoji (4-byte characters, ZWJ sequences, flags), mathematical letters, code, numbers,
runs of spaces, tabs and newlines, control characters, very long words and special-token
lookalikes. TRAIN is what the trainers learn from.
"""

import json

CORPUS = [
    "Hello, world! Isn't it a lovely day? Yes -- it's 3:45pm; \"quotes\" & (parens).",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX'S DOG'LL JUMP.",
    "北京欢迎你。我们在学习自然语言处理！",
    "東京は日本の首都です。カタカナとひらがな、漢字。",
    "한국어 문장도 있습니다.",
    "Crème brûlée à Genève, naïve façade, Ångström, São Paulo, Øresund, Đà Nẵng.",
    "ΣΑΣ ΟΔΥΣΣΕΥΣ · İstanbul ǅemal ß ﬁ Ⅻ ①② ٣٤٥ ४२",
    "emoji 😀🥳🤯👩‍👩‍👧 flags 🇫🇷🇯🇵 math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛 hieroglyph 𓀀 ext-B 𠀀𪜀",
    "def f(x):\n\treturn {'a': x ** 2, \"b\": [1, 2.5e-3]}  # comment\nif a!=b&&c||d: pass",
    "int main() { printf(\"%d\\n\", a[i]++ >> 2); return 0; }",
    "Numbers: 1,234,567.89 −42 3.14159 1e10 0x1F 12:30 2024-01-31 $5 €10 ¥100 50% 1234567",
    "spaces   and\ttabs\t\tand\nnewlines\n\n\r\nand\u00a0nbsp\u3000ideographic\u2003em   ",
    "control\x00chars\x01here\x7f\u200bzero\u200dwidth\ufeffbom\ufffdreplacement\x0b\x0c\x85",
    "x" * 100 + " " + "y" * 101 + " supercalifragilisticexpialidocious" * 3,
    "<|endoftext|>The end.<|endoftext|> and <s>roberta</s> tags, <|begin_of_text|>",
    "",
    "   ",
    "a",
    "Ünïcödé çömbïnïng: e\u0301 a\u0308 o\u0323\u0302 and stacked x\u0301\u0316\u0334",
    "Arabic العربية, Hebrew עִבְרִית, Hindi हिन्दी, Thai ภาษาไทย, Russian Привет мир!",
    "URLs https://example.com/path?q=1&r=a+b#frag and emails someone@example.org",
    "«Guillemets» „Anführungszeichen“ 「括弧」 — em dash – en dash … ellipsis ‘single’",
    "@#$%^&*()_+-=[]{}|;':\",./<>?`~\\",
    "I'M YOU'RE we've They'D she'll IT's don't",
]
TRAIN = CORPUS * 3 + [" ".join(CORPUS[:2]) * 5]
# Special tokens of every kind of tokenizer, in text and in a pair (matched as added tokens
# where the vocabulary has them), among spaces and punctuation the decoders clean up.
SPECIAL_TEXT = ("Hello <s>world</s> , isn't it? <pad> do not . [MASK] end",
                "second <|endoftext|> <unk> [CLS]")


def load_both(data, directory):
    """(tokenizers' Tokenizer, ours) read from the same tokenizer.json written in directory."""
    from tokenizers import Tokenizer

    from npplm import load_tokenizer

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False),
                                              encoding="utf-8")
    return Tokenizer.from_file(str(directory / "tokenizer.json")), load_tokenizer(directory)


def assert_decode_like_transformers(ours, theirs, ids):
    """decode(ids) keeps the special tokens, decode(ids, skip_special_tokens=True) drops them,
    and both texts are transformers': `theirs` is a transformers tokenizer, or a tokenizers
    Tokenizer that transformers' PreTrainedTokenizerFast wraps (its interface, defaults
    included, is the one ours follows)."""
    from tokenizers import Tokenizer

    if isinstance(theirs, Tokenizer):
        from transformers import PreTrainedTokenizerFast

        theirs = PreTrainedTokenizerFast(tokenizer_object=theirs)
    kept, skipped = ours.decode(ids), ours.decode(ids, skip_special_tokens=True)
    assert kept == theirs.decode(ids)
    assert skipped == theirs.decode(ids, skip_special_tokens=True)
    assert kept != skipped, "the ids hold no special token"
    assert ours.decode_batch([ids, ids[:1]]) == theirs.batch_decode([ids, ids[:1]])


def assert_same_ids(theirs, ours, texts):
    """Ids and type ids of single texts and of consecutive pairs, with and without the
    template, and the tokens."""
    for text in texts:
        expected, got = theirs.encode(text), ours.encode(text)
        assert (got.ids, got.token_type_ids) == (expected.ids, expected.type_ids), text
        plain = theirs.encode(text, add_special_tokens=False)
        assert ours.tokenize(text) == plain.tokens, text
    for a, b in zip(texts, texts[1:]):
        expected, got = theirs.encode(a, b), ours.encode(a, b)
        assert (got.ids, got.token_type_ids) == (expected.ids, expected.type_ids), (a, b)


def assert_same_batch(theirs, ours, texts, max_length):
    """Padded, truncated batches: input_ids, attention_mask and token_type_ids."""
    import numpy as np

    batch = ours.encode_batch(texts, truncation=True, max_length=max_length)
    theirs.enable_truncation(max_length)
    theirs.enable_padding(pad_id=ours.pad_id)
    try:
        expected = theirs.encode_batch(texts)
    finally:
        theirs.no_truncation()
        theirs.no_padding()
    assert batch["input_ids"].dtype == np.int64
    np.testing.assert_array_equal(batch["input_ids"], [e.ids for e in expected])
    np.testing.assert_array_equal(batch["attention_mask"], [e.attention_mask for e in expected])
    np.testing.assert_array_equal(batch["token_type_ids"], [e.type_ids for e in expected])

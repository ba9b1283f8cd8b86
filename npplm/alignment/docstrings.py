"""A default alignment data set every Python installation carries: the standard library's
docstrings as questions and answers.

For each public function, class and method of the standard library, read from its source
with `ast` (no module is imported), the docstring's first sentences answer a question about
it:

    prompt      "What does `json.dumps` do?"   (classes: "What is `fractions.Fraction`?")
    completion  " Serialize ``obj`` to a JSON formatted ``str``."

as TRL's prompt-completion examples ({"prompt": str, "completion": str}, the completion led
by a space as in TRL's examples), or conversational ones ({"prompt": [user message],
"completion": [assistant message]}, no space), ready for SFT. The
preference set pairs the same prompt with the right answer (chosen) and the answer of
another definition of the same module (rejected): a hard negative, on the same subject and
in the same voice, that only knowing the name tells apart.

The answer is the docstring cleaned by `inspect.cleandoc` (which ast.get_docstring applies),
its first paragraph (the second when the first is a signature line such as "f(x) -> int"),
joined onto one line, cut to its first MAX_SENTENCES sentences that fit in MAX_CHARS
characters. Skipped: private names (a leading underscore, dunders included), private
modules and test suites, docstrings under MIN_WORDS words or whose first sentence alone is
longer than MAX_CHARS, doctests and reST directives, and duplicates: a name seen before, or
an answer already given (the first, in module order, keeps it).

Train and validation are split by top-level package (a stable hash of its name, about
VALIDATION_PERCENT % held out), so all of `email.*` lands on one side and the held-out
answers describe modules the model never trained on; a validation answer that also appears
in training is dropped. Everything is deterministic for a given Python version (its
standard library is the data) and cached per process.
"""

import ast
import functools
import hashlib
import os
import random
import re
import sysconfig

VALIDATION_PERCENT = 10  # of top-level packages (by hash), held out
MAX_SENTENCES = 2
MAX_CHARS = 300
MIN_WORDS = 4
# Folders that hold no public API: test suites, demos, installed third-party packages.
SKIPPED_FOLDERS = {"test", "tests", "idle_test", "turtledemo", "site-packages",
                   "dist-packages", "__pycache__"}
SPLITS = ("train", "validation")

# A sentence ends at . ! or ? followed by white space and a capital, quote or backquote
# ("e.g. the" is not an end).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`'\"(])")
_SIGNATURE = re.compile(r"[\w.]+\(.*\)(\s*->.*)?")


def stdlib_modules():
    """(dotted name, path) of the standard library's public modules, sorted by name."""
    root = sysconfig.get_paths()["stdlib"]
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in SKIPPED_FOLDERS]
        rel = os.path.relpath(folder, root)
        package = [] if rel == "." else rel.split(os.sep)
        for file in files:
            if not file.endswith(".py"):
                continue
            parts = package + ([] if file == "__init__.py" else [file[:-3]])
            if parts and all(p.isidentifier() and not p.startswith("_") for p in parts):
                found.append((".".join(parts), os.path.join(folder, file)))
    return sorted(found)


def split_of(module):
    """"train" or "validation": a stable hash of the module's top-level package."""
    top = module.split(".")[0]
    bucket = int.from_bytes(hashlib.sha256(top.encode()).digest()[:4], "big") % 100
    return "validation" if bucket < VALIDATION_PERCENT else "train"


def first_sentences(docstring):
    """The answer a docstring gives (see the module docstring), or None when it gives none."""
    paragraphs = [p for p in re.split(r"\n\s*\n", docstring.strip()) if p.strip()]
    if not paragraphs:
        return None
    if _SIGNATURE.fullmatch(paragraphs[0].strip()):
        paragraphs = paragraphs[1:2]  # "f(x) -> int", then the description
        if not paragraphs:
            return None
    text = " ".join(paragraphs[0].split())
    if ">>>" in text or text.startswith((":", "..")):
        return None
    sentences = _SENTENCE_END.split(text)
    answer = sentences[0]
    for sentence in sentences[1:MAX_SENTENCES]:
        if len(answer) + 1 + len(sentence) > MAX_CHARS:
            break
        answer += " " + sentence
    if len(answer) > MAX_CHARS or len(answer.split()) < MIN_WORDS:
        return None
    return answer


def _definitions(body):
    """The function and class definitions of a module's body, those under its top-level
    if / try / with blocks included (platform-dependent definitions), in source order."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield node
        elif isinstance(node, ast.If | ast.Try | ast.With):
            blocks = [node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])]
            blocks += [h.body for h in getattr(node, "handlers", [])]
            for block in blocks:
                yield from _definitions(block)


@functools.cache
def module_entries(module, path):
    """((name, is_class, answer), ...) of one module's public definitions with an answer,
    in source order: functions and classes as "module.name", methods of public classes as
    "module.Class.method". A module that does not parse gives none."""
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read())
    except (SyntaxError, ValueError, OSError):
        return ()
    entries = []

    def add(node, name):
        doc = ast.get_docstring(node)  # cleaned by inspect.cleandoc
        answer = doc and first_sentences(doc)
        if answer:
            entries.append((name, isinstance(node, ast.ClassDef), answer))

    for node in _definitions(tree.body):
        if node.name.startswith("_"):
            continue
        add(node, f"{module}.{node.name}")
        if isinstance(node, ast.ClassDef):
            for child in node.body:
                if (isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                        and not child.name.startswith("_")):
                    add(child, f"{module}.{node.name}.{child.name}")
    return tuple(entries)


@functools.cache
def _split_entries(split, max_modules):
    """{module: [(name, is_class, answer), ...]} of a split's first max_modules modules, with
    duplicate names and answers removed (the first keeps them); validation also loses the
    answers that training has."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
    if max_modules is not None and max_modules < 1:
        raise ValueError(f"max_modules must be >= 1 or None, got {max_modules}")
    modules = [(m, p) for m, p in stdlib_modules() if split_of(m) == split][:max_modules]
    seen_names, seen_answers = set(), set()
    if split == "validation":
        seen_answers = {a for entries in _split_entries("train", None).values()
                        for _, _, a in entries}
    out = {}
    for module, path in modules:
        kept = []
        for name, is_class, answer in module_entries(module, path):
            if name in seen_names or answer in seen_answers:
                continue
            seen_names.add(name)
            seen_answers.add(answer)
            kept.append((name, is_class, answer))
        if kept:
            out[module] = tuple(kept)
    return out


def question(name, is_class):
    """The prompt asking what a definition is or does."""
    return f"What is `{name}`?" if is_class else f"What does `{name}` do?"


def _example(prompt, conversational, **answers):
    """A TRL example: standard, the answers led by a space (TRL's " blue." after "The sky
    is", so no token straddles the boundary); or one user and one assistant message."""
    if not conversational:
        return {"prompt": prompt, **{k: " " + v for k, v in answers.items()}}
    return {"prompt": [{"role": "user", "content": prompt}],
            **{k: [{"role": "assistant", "content": v}] for k, v in answers.items()}}


def instruction_pairs(split="train", max_modules=None, conversational=False):
    """TRL prompt-completion dicts, one per documented public definition of the split's
    modules (the first max_modules of them, sorted by name; None: all); conversational:
    the prompt and completion as one user and one assistant message."""
    return [_example(question(name, is_class), conversational, completion=answer)
            for entries in _split_entries(split, max_modules).values()
            for name, is_class, answer in entries]


def preference_pairs(split="train", max_modules=None, conversational=False, seed=0):
    """TRL preference dicts {"prompt", "chosen", "rejected"}: chosen is the definition's own
    answer, rejected the answer of another definition of the same module, drawn by a
    generator seeded with (seed, name), so a pair does not change when others are added.
    Modules with a single definition give no pair."""
    rows = []
    for entries in _split_entries(split, max_modules).values():
        for k, (name, is_class, answer) in enumerate(entries):
            others = [a for j, (_, _, a) in enumerate(entries) if j != k and a != answer]
            if not others:
                continue
            rejected = random.Random(f"{seed}:{name}").choice(others)
            rows.append(_example(question(name, is_class), conversational, chosen=answer,
                                 rejected=rejected))
    return rows


# --- prompts for RLHF (ppo.py), TRL's prompt-only format ------------------------------------

MAX_HEADER_CHARS = 100


def question_prompts(split="train", max_modules=None, conversational=False):
    """TRL prompt-only dicts {"prompt"}: the instruction pairs' questions, for a chat model."""
    return [{"prompt": row["prompt"]} for row in instruction_pairs(split, max_modules,
                                                                   conversational)]


@functools.cache
def module_headers(path):
    """(header, indentation) of each function and method of a module with a one-line `def`
    header (at most MAX_HEADER_CHARS characters), in source order: the header line as
    written, and the indentation of its body's first line."""
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        tree = ast.parse(source)
    except (SyntaxError, ValueError, OSError, UnicodeDecodeError):
        return ()
    lines = source.splitlines()
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef) or node.body[0].lineno <= node.lineno:
            continue
        header, first = lines[node.lineno - 1], lines[node.body[0].lineno - 1]
        if header.rstrip().endswith(":") and len(header) <= MAX_HEADER_CHARS:
            found.append((header.rstrip(), first[:len(first) - len(first.lstrip())]))
    return tuple(sorted(set(found), key=found.index))


def code_prompts(split="train", max_modules=None):
    """TRL prompt-only dicts {"prompt": a function's `def` line, a newline and its body's
    indentation}, from the split's modules (by top-level package, as the pairs): what a
    model pre-trained on the standard library's source continues with a function body.
    Public and private functions alike; each distinct header once."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
    modules = [p for m, p in stdlib_modules() if split_of(m) == split][:max_modules]
    seen, rows = set(), []
    for path in modules:
        for header, indent in module_headers(path):
            if header not in seen:
                seen.add(header)
                rows.append({"prompt": f"{header}\n{indent}"})
    return rows

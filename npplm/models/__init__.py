"""The model families, one file each, the tables `from_pretrained` dispatches on, and it.

    base.py     PreTrainedModel (config, load / save, the backbone prefix), config checks
    output.py   ModelOutput, the named Tensors a forward returns
    gpt.py      GPT-1, GPT-2, GPT-3: read this family first, every other file compares
                itself with GPT-2
    llama.py    LLaMA 1/2/3 (RMSNorm, RoPE, SwiGLU, grouped-query attention), GGUF files
    qwen2.py    Qwen2 and Qwen2.5: LLaMA's blocks with q/k/v biases (and their GGUF files)
    chatglm.py  ChatGLM2/3 and GLM-4 (transformers' "glm"): LLaMA's blocks with q/k/v biases,
                a fused gate/up projection, RoPE on half of each head in neighbouring pairs
    gguf_export.py  write_gguf: a LLaMA or Qwen2 model and its tokenizer to one quantised
                GGUF file (`npplm quantize`)
    glm.py      GLM, the 2021 model (blank infilling, 2D positions, DeepNorm; model_type
                "npplm-glm", not transformers' "glm", which is chatglm.py's)
    t5.py       T5 v1.0 / v1.1 (encoder-decoder, relative position buckets)
    bert.py, roberta.py, albert.py   the encoders and their task heads

ARCHITECTURES maps a Hugging Face `architectures` name to our class; BASE_MODELS maps a
`model_type` to the backbone used when a config names no architecture we know;
GGUF_ARCHITECTURES maps a GGUF file's `general.architecture` to the class that reads it.
The tables are written out by hand: adding a family means adding its lines here.
"""

import pathlib

from npplm.io import CheckpointError, read_config, refuse_pickle
from npplm.io.gguf import open_reader, read_metadata
from npplm.models import albert, bert, chatglm, glm, gpt, llama, qwen2, roberta, t5

ARCHITECTURES = {
    # BERT (bert.py)
    "BertModel": bert.BertModel,
    "BertForPreTraining": bert.BertForPreTraining,
    "BertForMaskedLM": bert.BertForMaskedLM,
    "BertForNextSentencePrediction": bert.BertForNextSentencePrediction,
    "BertForSequenceClassification": bert.BertForSequenceClassification,
    "BertForMultipleChoice": bert.BertForMultipleChoice,
    "BertForTokenClassification": bert.BertForTokenClassification,
    "BertForQuestionAnswering": bert.BertForQuestionAnswering,
    # ALBERT (albert.py)
    "AlbertModel": albert.AlbertModel,
    "AlbertForPreTraining": albert.AlbertForPreTraining,
    "AlbertForMaskedLM": albert.AlbertForMaskedLM,
    "AlbertForSequenceClassification": albert.AlbertForSequenceClassification,
    "AlbertForMultipleChoice": albert.AlbertForMultipleChoice,
    "AlbertForTokenClassification": albert.AlbertForTokenClassification,
    "AlbertForQuestionAnswering": albert.AlbertForQuestionAnswering,
    # RoBERTa (roberta.py)
    "RobertaModel": roberta.RobertaModel,
    "RobertaForMaskedLM": roberta.RobertaForMaskedLM,
    "RobertaForSequenceClassification": roberta.RobertaForSequenceClassification,
    "RobertaForMultipleChoice": roberta.RobertaForMultipleChoice,
    "RobertaForTokenClassification": roberta.RobertaForTokenClassification,
    "RobertaForQuestionAnswering": roberta.RobertaForQuestionAnswering,
    # GPT-1 and GPT-2 (gpt.py); GPT-3 configs load as GPT2LMHeadModel with sparse layers
    "GPT2Model": gpt.GPT2Model,
    "GPT2LMHeadModel": gpt.GPT2LMHeadModel,
    "GPT2ForSequenceClassification": gpt.GPT2ForSequenceClassification,
    "OpenAIGPTModel": gpt.OpenAIGPTModel,
    "OpenAIGPTLMHeadModel": gpt.OpenAIGPTLMHeadModel,
    # LLaMA (llama.py)
    "LlamaModel": llama.LlamaModel,
    "LlamaForCausalLM": llama.LlamaForCausalLM,
    "LlamaForSequenceClassification": llama.LlamaForSequenceClassification,
    # Qwen2 and Qwen2.5 (qwen2.py)
    "Qwen2Model": qwen2.Qwen2Model,
    "Qwen2ForCausalLM": qwen2.Qwen2ForCausalLM,
    "Qwen2ForSequenceClassification": qwen2.Qwen2ForSequenceClassification,
    # ChatGLM2/3 and GLM-4 (chatglm.py): transformers' model_type "glm"
    "GlmModel": chatglm.GlmModel,
    "GlmForCausalLM": chatglm.GlmForCausalLM,
    "GlmForSequenceClassification": chatglm.GlmForSequenceClassification,
    # GLM (glm.py): npplm's own config.json (transformers has no class for the 2021 GLM)
    "GLMForConditionalGeneration": glm.GLMForConditionalGeneration,
    # T5 (t5.py)
    "T5Model": t5.T5Model,
    "T5ForConditionalGeneration": t5.T5ForConditionalGeneration,
}
BASE_MODELS = {
    "bert": bert.BertModel,
    "albert": albert.AlbertModel,
    "roberta": roberta.RobertaModel,
    "gpt2": gpt.GPT2Model,
    "openai-gpt": gpt.OpenAIGPTModel,
    "llama": llama.LlamaModel,
    "qwen2": qwen2.Qwen2Model,
    "glm": chatglm.GlmModel,  # GLM-4; the 2021 GLM (glm.py) is "npplm-glm"
    "t5": t5.T5Model,
}
GGUF_ARCHITECTURES = {
    "llama": llama.LlamaForCausalLM,
    "qwen2": qwen2.Qwen2ForCausalLM,
}


def from_pretrained(path, dequantize=False):
    """Load any supported checkpoint: a folder, as the class its config.json names, or a
    llama.cpp .gguf file, as the class of its `general.architecture`, its block-quantised
    weights kept so (npplm.quantization) unless dequantize=True (training needs float32).

    In a folder, `architectures[0]` picks the class (BertForMaskedLM, ...); without it, the
    base model of `model_type`. A pickle file, a missing config or weights, or keys that do
    not fit raise CheckpointError naming what is wrong. The model is returned in eval mode.
    """
    path = pathlib.Path(path)
    refuse_pickle(path)
    if path.suffix == ".gguf":  # one llama.cpp file: weights, config and tokenizer together
        arch = read_metadata(open_reader(path)).get("general.architecture")
        if arch not in GGUF_ARCHITECTURES:
            raise CheckpointError(f"{path}: general.architecture is {arch!r}; npplm reads GGUF "
                                  f"files of the {', '.join(map(repr, GGUF_ARCHITECTURES))} "
                                  "architecture only")
        return GGUF_ARCHITECTURES[arch].from_gguf(path, dequantize=dequantize)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint directory")
    config = read_config(path)
    names = config.get("architectures") or []
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name].from_pretrained(path)
    model_type = config.get("model_type")
    if model_type in BASE_MODELS:
        return BASE_MODELS[model_type].from_pretrained(path)
    raise CheckpointError(f"{path}: unsupported model (architectures {names}, model_type "
                          f"{model_type!r}); supported architectures: "
                          f"{', '.join(sorted(ARCHITECTURES))}")

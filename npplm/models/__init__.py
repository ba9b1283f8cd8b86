"""The model families, one file each, and the tables `from_pretrained` dispatches on.

ARCHITECTURES maps a Hugging Face `architectures` name to our class; BASE_MODELS maps a
`model_type` to the backbone used when a config names no architecture we know. The
tables are written out by hand: adding a family means adding its lines here.
"""

from npplm.models import albert, bert, glm, gpt, llama, roberta, t5

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
    "OpenAIGPTModel": gpt.OpenAIGPTModel,
    "OpenAIGPTLMHeadModel": gpt.OpenAIGPTLMHeadModel,
    # LLaMA (llama.py)
    "LlamaModel": llama.LlamaModel,
    "LlamaForCausalLM": llama.LlamaForCausalLM,
    # GLM (glm.py): npplm's own config.json (no Hugging Face class reads GLM)
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
    "t5": t5.T5Model,
}

"""What a model call returns: named Tensors, the fields Hugging Face outputs use."""

from dataclasses import dataclass

from autograd import Tensor


@dataclass
class ModelOutput:
    """Fields a model does not produce stay None. All values are Tensors (`.numpy()`)."""

    loss: Tensor | None = None  # scalar; only when labels are given
    logits: Tensor | None = None  # (B, T, V) LM heads, (B, n_labels) classifiers, ...
    last_hidden_state: Tensor | None = None  # (B, T, C)
    encoder_last_hidden_state: Tensor | None = None  # (B, S, C): encoder-decoders (T5)
    pooler_output: Tensor | None = None  # (B, C): BERT's pooled [CLS]
    seq_relationship_logits: Tensor | None = None  # (B, 2): BERT's NSP, ALBERT's SOP
    start_logits: Tensor | None = None  # (B, T): extractive question answering
    end_logits: Tensor | None = None  # (B, T)

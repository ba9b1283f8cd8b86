"""Templates: the special tokens each family's tokenizer adds to a text, and their roles.

encode(text, add_special_tokens=True) puts special tokens around the text's ids, and each
published tokenizer has its own way; a tokenizer.json says it in its "post_processor":

    family      one text          a pair ($A, $B: the texts; ":1": token_type_id 1, else 0)
    GPT-2       $A                $A $B:1
    LLaMA-1/2   <s> $A            <s> $A <s>:1 $B:1
    BERT        [CLS] $A [SEP]    [CLS] $A [SEP] $B:1 [SEP]:1
    RoBERTa     <s> $A </s>       <s> $A </s> </s> $B </s>
    ALBERT      [CLS] $A [SEP]    [CLS] $A [SEP] $B:1 [SEP]:1
    T5          $A </s>           $A </s> $B </s>
    GLM         $A                $A $B:1

What a tokenizer.json does not say is the role of each special token: which one begins a
sequence (bos_token), ends it (eos_token), pads a batch, stands for a masked token ... .
transformers reads those from tokenizer_config.json, under the names of
base.SPECIAL_TOKEN_ROLES; our tokenizers carry them as attributes (tok.eos_token) and save
them there. A Template holds both, and every trainer takes one (template=...):

    train_byte_level_bpe(lines, 2048, special_tokens=("<s>", "<pad>", "</s>", "<unk>",
                                                      "<mask>"), template=ROBERTA)

The templates below use each family's published token names; a trainer's special_tokens
must hold every token its template names.
"""

from dataclasses import dataclass

from npplm.tokenizers.base import SPECIAL_TOKEN_ROLES, parse_template


@dataclass(frozen=True)
class Template:
    """The special tokens encode adds to one text and to a pair, and the role of each.

    single, pair     ("$A" | "$B" | special token, token_type_id) items (base.py); the
                     default adds nothing, the second text taking type id 1 (tokenizers')
    bos_token ...    the token playing each of base.SPECIAL_TOKEN_ROLES, or None
    """

    single: tuple = (("$A", 0),)
    pair: tuple = (("$A", 0), ("$B", 1))
    bos_token: str | None = None
    eos_token: str | None = None
    unk_token: str | None = None
    sep_token: str | None = None
    pad_token: str | None = None
    cls_token: str | None = None
    mask_token: str | None = None

    @classmethod
    def parse(cls, single, pair, **roles):
        """A Template from tokenizers' shorthand (base.parse_template):

            Template.parse("<s> $A", "<s> $A <s>:1 $B:1", bos_token="<s>")
        """
        return cls(parse_template(single), parse_template(pair), **roles)

    def arguments(self):
        """The single, pair, pad_token and roles arguments of a tokenizer's constructor
        (roles: {role: token} of the named roles but padding, which has its argument)."""
        roles = {role: getattr(self, role) for role in SPECIAL_TOKEN_ROLES
                 if role != "pad_token" and getattr(self, role) is not None}
        return dict(single=self.single, pair=self.pair, pad_token=self.pad_token, roles=roles)


EOT = "<|endoftext|>"  # GPT-2's one special token

# GPT-2 adds nothing; its one special token is its beginning, end and unknown token.
GPT2 = Template(bos_token=EOT, eos_token=EOT, unk_token=EOT)
# LLaMA-1/2: "<s>" before each text, the pair's second one of type id 1 (LlamaTokenizerFast
# with add_bos_token=True, add_eos_token=False); no padding token.
LLAMA = Template.parse("<s> $A", "<s> $A <s>:1 $B:1",
                       bos_token="<s>", eos_token="</s>", unk_token="<unk>")
BERT = Template.parse("[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1",
                      unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                      cls_token="[CLS]", mask_token="[MASK]")
# RobertaProcessing: a pair is two sequences joined by "</s> </s>", every id of type 0.
ROBERTA = Template.parse("<s> $A </s>", "<s> $A </s> </s> $B </s>",
                         bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                         sep_token="</s>", pad_token="<pad>", cls_token="<s>",
                         mask_token="<mask>")
# ALBERT: BERT's template; its [CLS] and [SEP] are also its bos and eos tokens.
ALBERT = Template.parse("[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1",
                        bos_token="[CLS]", eos_token="[SEP]", unk_token="<unk>",
                        sep_token="[SEP]", pad_token="<pad>", cls_token="[CLS]",
                        mask_token="[MASK]")
# T5: "</s>" after each text, every id of type 0.
T5 = Template.parse("$A </s>", "$A </s> $B </s>",
                    eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
# GLM adds nothing: its objectives place [MASK], [gMASK], [S] and [E] themselves.
GLM = Template(eos_token=EOT, pad_token="<pad>", mask_token="[MASK]")

"""The model families, one file each, and the tables `from_pretrained` dispatches on.

ARCHITECTURES maps a Hugging Face `architectures` name to our class; BASE_MODELS maps a
`model_type` to the backbone used when a config names no architecture we know. The
tables are written out by hand: adding a family means adding its lines here.
"""

ARCHITECTURES = {}
BASE_MODELS = {}

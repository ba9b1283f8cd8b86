"""The character MLP demo (`npplm demo`) learns: perplexity falls well below uniform."""

from npplm.training import char_mlp


def test_char_mlp_learns_python():
    lines = []
    _, ppl = char_mlp.train(steps=150, batch=128, max_chars=200_000, log=lines.append)
    start = float(lines[2].split("perplexity")[1])
    assert start > 80  # about a uniform guess over 96 characters
    assert ppl < 20
    assert lines[-1].startswith("sample:\ndef ")

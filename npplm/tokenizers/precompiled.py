"""SentencePiece's compiled normalization rules: tokenizer.json's "Precompiled" normalizer.

SentencePiece (Kudo & Richardson, "SentencePiece: A simple and language independent subword
tokenizer and detokenizer for Neural Text Processing", arXiv:1808.06226, section 3.3)
normalizes text with a table of rewrite rules before segmenting it. Its default rule set,
nmt_nfkc, is NFKC plus a few rules of its own (control characters deleted, the many
Unicode spaces and "\\t" "\\n" turned into " "); nfkc_cf and nmt_nfkc_cf add case folding.
A model file carries the rules compiled, as `normalizer_spec.precompiled_charsmap`, and
transformers' slow->fast converter copies that blob, base64-encoded, into the
tokenizer.json of T5, ALBERT, XLNet, mT5, LLaMA-1 and the rest:

    {"type": "Precompiled", "precompiled_charsmap": "ALQCAACEAAAAAACAAQAAgMz8AgC4BQAAhyIAgMzk..."}

The blob, decoded from base64:

    bytes 0..3        n, a little-endian uint32: the size of the trie in bytes
    bytes 4..4+n      the trie: n / 4 little-endian uint32 units, a darts-clone double array
                      (DoubleArray below). Its keys are the UTF-8 bytes of the texts a rule
                      rewrites ("ﬁ", "①", "\\u3000", "ｶﾞ"); its values are byte offsets into
                      the strings that follow.
    bytes 4+n..       the replacements: UTF-8 strings, each ended by a NUL, back to back
                      ("fi\\x001\\x00 \\x00ガ\\x00..."). The value v stands for the bytes from v to
                      the next NUL (an empty string deletes the key: control characters).

Matching. Both libraries look up the rules at successive positions of the text, but cut
the text differently, so a few inputs normalize differently:

  - SentencePiece (normalizer.cc, `longest_match` here): at each byte position, the longest
    key that the rest of the text starts with; emit its replacement and skip the key; when
    no key matches, copy one UTF-8 character.
  - tokenizers (normalizers/precompiled.rs over the spm_precompiled crate; `__call__` here,
    which is what tokenizer.json ids need): cut the text into extended grapheme clusters
    (a character with its combining marks, "\\r\\n", an emoji ZWJ sequence). A cluster of
    fewer than 6 UTF-8 bytes that starts with a key is replaced, whole, by the replacement
    of the SHORTEST such key; otherwise each character of the cluster on its own is
    replaced by the key equal to it, or copied.

    text                                         tokenizers   SentencePiece
    "①\\u0301" (circled one, combining acute)     "1"          "1\\u0301"
    "Ａ\\u0301" (full-width A, combining acute)    "A"          "Á"
    "\\r\\n" (one cluster)                        " "          "  "
    "ｶﾞ" (half-width ka, voiced mark: 6 bytes)    "カ\\u3099"     "ガ"

Elsewhere the two agree (tests/tokenizers/test_precompiled.py checks both). A cluster's
result only depends on the cluster, so `__call__` caches it.
"""

import base64
import binascii
import struct
from dataclasses import dataclass

import regex

# --- The darts-clone double array ------------------------------------------------------------
#
# A trie over bytes stored as ONE array of uint32 units (Aoe's double array, packed by
# darts-clone into one array instead of two). A node is a position in the array; the
# children of the node at position p live at positions (p ^ offset(units[p])) ^ byte, one
# for each byte that continues a key, and the unit found there records the byte it was
# reached by (its label), so a lookup is: jump, then check that the label is the byte we
# followed. XOR (not +) keeps a node's children inside one aligned block of 256 units,
# which is how darts-clone packs them. Bits of a unit:
#
#   bits 0..7    label: the byte that leads from the parent to this node
#   bit 8        has_leaf: a key ends at this node; its value is in the child reached by
#                the byte 0 (position base ^ 0 = base), a leaf unit
#   bit 9        extension: the offset below is stored divided by 256 (shifted left by 8
#                when read), so 22 bits reach offsets up to 2^30
#   bits 10..31  offset: XOR distance from this node to the base of its children
#
# A leaf unit instead holds its value in bits 0..30 and has bit 31 set. The label of a unit
# is read as bits 0..7 AND bit 31, so a leaf unit never equals a byte: a walk that lands
# on one (by following a byte 0, say) stops there. The root is unit 0.

_LABEL = (1 << 31) | 0xFF
_HAS_LEAF = 1 << 8
_VALUE = (1 << 31) - 1


def _offset(unit):
    """XOR distance from a node to its children: bits 10..31, times 256 when bit 9 is set."""
    return (unit >> 10) << ((unit & (1 << 9)) >> 6)


class DoubleArray:
    """A read-only darts-clone double-array trie (see the layout above).

    units   the uint32 units, as a list of ints (the root is units[0])
    """

    def __init__(self, units):
        if not units:
            raise ValueError("precompiled_charsmap: the trie is empty (it needs at least the "
                             "root unit)")
        self.units = units

    def prefixes(self, data, start=0):
        """(end, value) of every key that data[start:] begins with, shortest first.

        data is bytes; data[start:end] is the key. The walk stops at a NUL byte (no key holds
        one: the byte 0 leads to leaf units), as spm_precompiled's does.
        """
        units = self.units
        node = _offset(units[0])  # the base of the root's children
        try:
            for i in range(start, len(data)):
                byte = data[i]
                if byte == 0:
                    return
                node ^= byte  # the child that `byte` would lead to...
                unit = units[node]
                if unit & _LABEL != byte:  # ... is another node's: no key continues so
                    return
                node ^= _offset(unit)  # now the base of that child's own children
                if unit & _HAS_LEAF:
                    yield i + 1, units[node] & _VALUE  # the leaf sits at base ^ 0
        except IndexError:
            raise ValueError(f"precompiled_charsmap: the trie points at unit {node}, past its "
                             f"{len(units)} units (a corrupt trie)") from None

    def one_byte_keys(self):
        """The bytes b for which bytes([b]) is a key."""
        return {b for b in range(1, 256) if next(self.prefixes(bytes([b])), None)}


def parse_charsmap(blob):
    """(DoubleArray, replacement strings as bytes) of a decoded precompiled_charsmap.

    Raises ValueError naming what is wrong with a malformed blob.
    """
    if len(blob) < 4:
        raise ValueError(f"precompiled_charsmap holds {len(blob)} bytes; it starts with a "
                         "4-byte trie size")
    (size,) = struct.unpack_from("<I", blob)
    if size % 4:
        raise ValueError(f"precompiled_charsmap: trie size {size} is not a multiple of 4 "
                         "(the trie is uint32 units)")
    if 4 + size > len(blob):
        raise ValueError(f"precompiled_charsmap: trie size {size} bytes exceeds the "
                         f"{len(blob) - 4} bytes that follow it (truncated blob or wrong "
                         "size)")
    units = list(struct.unpack_from(f"<{size // 4}I", blob, 4))
    strings = bytes(blob[4 + size:])
    try:
        strings.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"precompiled_charsmap: the replacement strings are not UTF-8 ({e})"
                         ) from None
    return DoubleArray(units), strings


# One extended grapheme cluster (the `regex` module's \X: Unicode's UAX #29 rules, which the
# unicode-segmentation crate under tokenizers implements too).
_CLUSTER = r"\X"
# tokenizers looks a whole cluster up only when it is shorter than this many UTF-8 bytes.
_MAX_CLUSTER_BYTES = 6


@dataclass(frozen=True, repr=False)
class Precompiled:
    """SentencePiece's compiled rules (nmt_nfkc, nfkc_cf ...), applied as tokenizers does.

    charsmap   the precompiled_charsmap blob (bytes; tokenizer.json holds it as base64)

    Precompiled(blob)("ﬁ ①  Ｈｅｌｌｏ\\x01") == "fi 1  Hello"; longest_match gives
    SentencePiece's own result (the module docstring lists where the two differ).
    """

    charsmap: bytes

    def __post_init__(self):
        trie, strings = parse_charsmap(self.charsmap)
        object.__setattr__(self, "_trie", trie)
        object.__setattr__(self, "_strings", strings)
        object.__setattr__(self, "_replacements", {})  # value -> replacement text
        object.__setattr__(self, "_clusters", {})      # cluster -> its normalized text
        # Plain text goes through quickly. An ASCII character followed by another is a
        # cluster of its own (but "\r\n"), so the only key it can start there is itself:
        # when it is no key, it is copied. Runs of such characters are copied whole; a run
        # stops before its last ASCII character, which may open a cluster (with a
        # combining mark: "a\u0301" is a key of nmt_nfkc, which composes it to "á").
        keys = trie.one_byte_keys()
        safe = "".join(f"\\x{b:02x}" for b in range(128) if b not in keys and b != 0x0D)
        object.__setattr__(self, "_pieces", regex.compile(
            f"((?:[{safe}](?=[\\x00-\\x7f]))+)|({_CLUSTER})" if safe else f"()({_CLUSTER})"))

    def _replacement(self, value):
        """The text of the NUL-terminated replacement at byte offset `value`."""
        text = self._replacements.get(value)
        if text is None:
            strings = self._strings
            if value > len(strings):
                raise ValueError(f"precompiled_charsmap: a rule points at byte {value} of "
                                 f"the {len(strings)}-byte replacement strings")
            end = strings.find(b"\0", value)
            try:
                text = strings[value:end if end >= 0 else len(strings)].decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"precompiled_charsmap: a rule points at byte {value}, "
                                 "inside a UTF-8 character of the replacement strings"
                                 ) from None
            self._replacements[value] = text
        return text

    def _shortest(self, text):
        """The replacement of the shortest key `text` starts with, or None."""
        match = next(self._trie.prefixes(text.encode("utf-8", "surrogatepass")), None)
        return None if match is None else self._replacement(match[1])

    def _cluster(self, cluster):
        """tokenizers' rule for one grapheme cluster (the module docstring)."""
        if len(cluster.encode("utf-8", "surrogatepass")) < _MAX_CLUSTER_BYTES:
            whole = self._shortest(cluster)
            if whole is not None:
                return whole
        return "".join(c if (r := self._shortest(c)) is None else r for c in cluster)

    def __call__(self, text):
        clusters = self._clusters
        if len(clusters) > 1 << 16:  # bound the cache on adversarial input
            clusters.clear()
        out = []
        for run, cluster in self._pieces.findall(text):
            if run:
                out.append(run)
                continue
            normalized = clusters.get(cluster)
            if normalized is None:
                normalized = clusters[cluster] = self._cluster(cluster)
            out.append(normalized)
        return "".join(out)

    def longest_match(self, text):
        """SentencePiece's rule: at each position, the replacement of the longest key there,
        else one character copied.

        A Python loop over bytes, for comparison and tests, not for speed. Where a key would
        end inside a character (only in a malformed blob), the stray bytes that follow each
        become U+FFFD, as in SentencePiece.
        """
        data = text.encode("utf-8", "surrogatepass")
        out, i = [], 0
        while i < len(data):
            matches = list(self._trie.prefixes(data, i))  # shortest first
            if matches:
                end, value = matches[-1]
                out.append(self._replacement(value))
                i = end
            elif data[i] & 0xC0 == 0x80:  # a continuation byte: not the start of a char
                out.append("\ufffd")
                i += 1
            else:
                n = 1 if data[i] < 0x80 else 2 if data[i] < 0xE0 else 3 if data[i] < 0xF0 else 4
                out.append(data[i:i + n].decode("utf-8", "surrogatepass"))
                i += n
        return "".join(out)

    def to_json(self):
        return {"type": "Precompiled",
                "precompiled_charsmap": base64.b64encode(self.charsmap).decode("ascii")}

    @classmethod
    def from_json(cls, entry):
        encoded = entry.get("precompiled_charsmap")
        if not isinstance(encoded, str):
            raise ValueError(f"precompiled_charsmap must be a base64 string, not "
                             f"{type(encoded).__name__}")
        try:
            blob = base64.b64decode(encoded, validate=True)
        except binascii.Error as e:
            raise ValueError(f"precompiled_charsmap is not valid base64 ({e})") from None
        return cls(blob)

    def __repr__(self):
        return f"Precompiled(<{len(self.charsmap)}-byte charsmap>)"

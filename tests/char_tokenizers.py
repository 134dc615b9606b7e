"""Tokenizers of one id per character, for layouts written by hand: decoder ord(ch) with <s> 1 and
</s> 2, encoder ord(ch) + 1000 with <s> 1001 and </s> 1002; d() and e() give the ids of a text."""


class Chars:
    """One id per character, ord(ch) + offset; bos and eos ids given; decode drops them."""

    def __init__(self, offset: int, bos: int, eos: int, name: str):
        self.offset, self.bos_id, self.eos_id, self.name = offset, bos, eos, name
        self.vocab_size, self.path = 0x110000 + offset, name

    def encode(self, text, bos=False, eos=False):
        return [self.bos_id] * bos + [ord(ch) + self.offset for ch in text] + [self.eos_id] * eos

    def decode(self, ids):
        return "".join(chr(i - self.offset) for i in ids if i not in (self.bos_id, self.eos_id))


DEC = Chars(0, bos=1, eos=2, name="decoder")
ENC = Chars(1000, bos=1001, eos=1002, name="encoder")
B, E = DEC.bos_id, DEC.eos_id  # decoder <s>, </s>
EB, EE = ENC.bos_id, ENC.eos_id  # encoder <s>, </s>


def d(text):
    """Decoder ids of `text`, by hand: one per character."""
    return [ord(ch) for ch in text]


def e(text):
    """Encoder ids of `text`, by hand."""
    return [ord(ch) + 1000 for ch in text]

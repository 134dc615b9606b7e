"""The encoder's parameter groups: the shared encoder, and one head per decoder.

The top-level keys of the encoder tree fall into groups. The shared group, "shared", is everything
that is not a head (tok_embeddings, layers, pooling_layers_{i}, memory_tokens): every decoder reads
it. Decoder d has its own head, keyed `decoder_{d}`: its projector and its special vectors (<Rec>
and <Cont>, rec_tok / cont_tok), which the encoder only uses when compressing for that decoder.

The groups exist because training treats them apart. Each parameter has a max learning rate
(encoder, special vectors, projector; the reference's optimiser trains two groups, its encoder group
holding the special vectors, reference train.py L258-271), and a step updates the shared
encoder and only the drawn decoder's head: the other heads, and their Adam moments, must not move.
So the optimiser keeps Adam moments per group, the step differentiates per group, frozen parts are
whole groups, and the moments are placed on the mesh per group. A group's name is also the key of
its Adam state in checkpoints, so these names must not change.

Within a head, <Rec>, <Cont> and the projector are the head's parts (HEAD_PARTS): each keeps its own
Adam update count, since a batch reads only the special vector of its task and the optimiser skips
the other one (arc_jax/train/optimizer.py). The part names are keys of a head's Adam counts in
checkpoints too.
"""

from __future__ import annotations

from typing import Any

SHARED = "shared"
REC_TOK = "rec_tok"
CONT_TOK = "cont_tok"
SPECIAL = (REC_TOK, CONT_TOK)  # the special vectors of a head (its projector trains at another rate)
PROJECTOR = "projector"  # the head's other parameters (layer1, layer2)
HEAD_PARTS = (REC_TOK, CONT_TOK, PROJECTOR)

_HEAD_PREFIX = "decoder_"


def head(decoder: int) -> str:
    """The name (and top-level key) of decoder `decoder`'s head."""
    return f"{_HEAD_PREFIX}{decoder}"


def is_head(key: str) -> bool:
    """Whether a top-level key of the encoder tree is a decoder's head."""
    return key.startswith(_HEAD_PREFIX)


def group_of(key: str) -> str:
    """The group a top-level key of the encoder tree belongs to: its head, or the shared group."""
    return key if is_head(key) else SHARED


def head_part(key: str) -> str:
    """The part of a head a key of the head's tree belongs to: rec_tok, cont_tok or projector."""
    return key if key in SPECIAL else PROJECTOR


def split(params: dict) -> dict[str, Any]:
    """{"shared": {key: subtree, ...}, "decoder_0": head, ...}; the shared group is always there
    (empty when the tree holds only heads)."""
    return {SHARED: {k: v for k, v in params.items() if not is_head(k)},
            **{k: v for k, v in params.items() if is_head(k)}}


def join(parts: dict[str, Any]) -> dict:
    """The encoder tree back from `split`'s groups."""
    return {**parts[SHARED], **{k: v for k, v in parts.items() if k != SHARED}}

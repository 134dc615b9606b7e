"""Checkpoints named by Hugging Face hub id ("kyutai/ARC8_Encoder_Llama", "Qwen/Qwen3-8B"), as the
reference's loader takes them: a source that is not a local path but looks like owner/name is
fetched through huggingface_hub's cache (its token, HF_HUB_CACHE and HF_HUB_OFFLINE apply as that
library handles them). huggingface_hub is optional (`pip install 'arc-jax[hub]'`); local folders
never need it."""

from __future__ import annotations

import os
import re
from pathlib import Path

from arc_jax.convert.errors import ConversionError

# What the readers look at: configs, weights, tokenizers (not a repository's other files).
CHECKPOINT_FILES = ["*.json", "*.safetensors", "*.model", "*.model.v3", "consolidated*.pth"]
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_hub_id(source: str | os.PathLike) -> bool:
    """Whether `source` is no local path and has the form owner/name."""
    return not Path(source).exists() and _HUB_ID.fullmatch(str(source)) is not None


def local_checkpoint(source: str | os.PathLike) -> Path:
    """The local folder of `source`: the path itself, or a hub id's snapshot in the cache
    (downloaded first when the cache lacks it and the hub may be reached)."""
    if not is_hub_id(source):
        return Path(source)
    try:
        import huggingface_hub
        from huggingface_hub import errors
    except ImportError:
        raise ConversionError(f"{source}: no such folder; to read it as a Hugging Face hub id, install "
                              "huggingface_hub (pip install 'arc-jax[hub]')") from None
    try:
        return Path(huggingface_hub.snapshot_download(str(source), allow_patterns=CHECKPOINT_FILES))
    except (errors.HfHubHTTPError, errors.LocalEntryNotFoundError, OSError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [""])[0]
        raise ConversionError(f"{source}: no such folder, and no Hugging Face hub snapshot of that id "
                              f"({type(e).__name__}: {reason})") from None

"""Input pipeline: tokenizers, record sources and mixtures, ARC training tasks, static-shape packing."""

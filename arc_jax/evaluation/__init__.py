"""Evaluation: the metrics of SPEC §6 (exact match, token F1, BLEU, ROUGE-L), without the reference packages."""

from arc_jax.evaluation.metrics import (
    METRICS,
    corpus_bleu,
    exact_match,
    normalize_answer,
    rouge_l,
    score,
    token_f1,
)

__all__ = ["METRICS", "corpus_bleu", "exact_match", "normalize_answer", "rouge_l", "score", "token_f1"]

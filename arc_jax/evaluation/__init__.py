"""Evaluation: the paper's metrics (metrics.py: exact match, token F1, BLEU, ROUGE-L, without the
reference packages) and the few-shot harness behind `arc-jax eval` (harness.py)."""

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

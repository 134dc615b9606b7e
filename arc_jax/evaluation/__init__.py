"""Evaluation: the paper's metrics as the reference computes them (metrics.py: exact match,
approximate EM, token F1, the xRAG answer-in-generation rate, the context-contains-answer rate,
BLEU, ROUGE-L, without the reference packages) and the few-shot harness behind `arc-jax eval` (harness.py)."""

from arc_jax.evaluation.metrics import (
    METRICS,
    REFERENCE_METRICS_BY_KIND,
    approx_exact_match,
    context_has_answer,
    corpus_bleu,
    exact_match,
    normalize_answer,
    record_scores,
    rouge_l,
    score,
    substring_match,
    token_f1,
)

__all__ = ["METRICS", "REFERENCE_METRICS_BY_KIND", "approx_exact_match", "context_has_answer", "corpus_bleu",
           "exact_match", "normalize_answer", "record_scores", "rouge_l", "score", "substring_match", "token_f1"]

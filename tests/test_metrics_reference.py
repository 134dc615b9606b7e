"""arc_jax.evaluation.metrics against the reference's own rules (kyutai-labs/ARC-Encoder,
embed_llm/generation/metrics.py and the scripts that aggregate it). Each expected value is worked
out by hand from the reference's code path named in the test's docstring; the last tests, skipped
without a copy of the reference and its packages, run the reference's metrics file itself (read
from its git mirror at test time, nothing of it stored here) on generated examples and compare."""

import os
import random
import subprocess
from pathlib import Path
from unittest import mock

import pytest

from arc_jax.evaluation.metrics import (
    LONG_CONTEXT_MAIN_METRIC,
    METRICS,
    REFERENCE_METRICS_BY_KIND,
    approx_exact_match,
    context_has_answer,
    corpus_bleu,
    exact_match,
    has_answer,
    normalize_answer,
    record_scores,
    rouge_l,
    score,
    simple_tokenize,
    substring_match,
    token_f1,
)

# --- Normalisation and EM -------------------------------------------------------------------------


def test_normalize_answer_corner_cases():
    """metrics.py normalize_answer: lower, then drop string.punctuation (ASCII only), then the
    whole words a/an/the, then collapse whitespace. Nothing unicode-specific."""
    assert normalize_answer("  The\tEnd.\n") == "end"
    assert normalize_answer("An apple, a DAY!") == "apple day"
    assert normalize_answer("the-end") == "theend"  # punctuation first, so no article is left
    assert normalize_answer("Anthem theatre") == "anthem theatre"  # articles only as whole words
    assert normalize_answer("Café") == "café"  # no accent folding
    assert normalize_answer("don’t") == "don’t"  # U+2019 is not ASCII punctuation: kept
    assert normalize_answer("U.S.") == "us"


def test_exact_match_by_hand():
    """metrics.py get_em (normalised equality) under metric_max_over_ground_truths (max over the
    answers), as eval_context_comp.py evaluate_QA computes "EM"/"Metric"."""
    assert exact_match("The Eiffel Tower!", ["eiffel tower"]) == 1.0
    assert exact_match("Eiffel", ["Tower", "eiffel"]) == 1.0  # second answer
    assert exact_match("Eiffel Tower in Paris", "Eiffel Tower") == 0.0
    assert exact_match("", "the") == 1.0  # both normalise to ""
    assert exact_match("", ["Paris"]) == 0.0  # empty prediction
    assert exact_match("cafe", "Café") == 0.0


# --- Approximate EM --------------------------------------------------------------------------------


def test_approx_exact_match_by_hand():
    """metrics.py get_approx_em: the normalised answer split on " " must occur as a contiguous
    run in the normalised prediction split on " " (whole words, in order); max over answers."""
    # [it, is, eiffel, tower, in, paris] contains [eiffel, tower]
    assert approx_exact_match("It is the Eiffel Tower, in Paris.", "Eiffel Tower") == 1.0
    assert approx_exact_match("Eiffel", "Eiffel Tower") == 0.0  # prediction shorter than the answer
    assert approx_exact_match("tower eiffel", "eiffel tower") == 0.0  # order matters
    assert approx_exact_match("the towers", "tower") == 0.0  # whole words
    assert approx_exact_match("we went to Paris", ["London", "paris"]) == 1.0  # max over answers
    # Empty prediction: "".split(" ") == [""], which is not [paris].
    assert approx_exact_match("", "Paris") == 0.0
    # An answer normalising to "" is the one word "": only an empty prediction contains it.
    assert approx_exact_match("the", "The") == 1.0
    assert approx_exact_match("paris", "The") == 0.0


# --- F1 -------------------------------------------------------------------------------------------


def test_token_f1_by_hand():
    """metrics.py get_f1_score under metric_max_over_ground_truths: SQuAD token F1 of normalised
    words, 0 when either side normalises to yes/no/noanswer and they differ, 0 without overlap
    (so an empty side, empty against empty included, scores 0)."""
    # [cat, sat, on, mat] vs [cat, on, mat]: overlap 3, P = 3/4, R = 1, F = 1.5/1.75 = 6/7
    assert token_f1("the cat sat on mat", "a cat on the mat") == pytest.approx(6 / 7)
    # [b, b, c] vs [b, c, c]: overlap one b and one c, P = R = 2/3
    assert token_f1("b b c", "b c c") == pytest.approx(2 / 3)
    # yes/no/noanswer rule: plain F1 would give P = 1, R = 1/3, F = 0.5; the rule gives 0.
    assert token_f1("yes", "yes it is") == 0.0
    assert token_f1("It is yes", "yes") == 0.0  # the answer side triggers it too
    assert token_f1("Yes.", "yes") == 1.0 and token_f1("No!", "no") == 1.0
    assert token_f1("No-answer", "noanswer") == 1.0  # "no-answer" normalises to "noanswer"
    assert token_f1("no answer", "noanswer") == 0.0
    # Empty sides.
    assert token_f1("", "the") == 0.0  # both "": no overlap -> 0 (SQuAD v2 would say 1)
    assert token_f1("", "Paris") == 0.0 and token_f1("Paris", "a") == 0.0
    # Max over answers: 0 against "yes", 1 against "the cat".
    assert token_f1("cat", ["yes", "the cat"]) == 1.0


# --- xRAG metric (answer in the generation) --------------------------------------------------------


def test_simple_tokenize_by_hand():
    """metrics.py SimpleTokenizer: regex ([\\p{L}\\p{N}\\p{M}]+)|([^\\p{Z}\\p{C}]), tokens lowercased
    one by one (tokenize(..., uncased=True))."""
    assert simple_tokenize("U.S. Army, 3km!") == ["u", ".", "s", ".", "army", ",", "3km", "!"]
    assert simple_tokenize("state-of-the-art") == ["state", "-", "of", "-", "the", "-", "art"]
    assert simple_tokenize("don’t\u00a0stop\u200b\tNOW\n") == ["don", "’", "t", "stop", "now"]  # Zs, Cf, Cc split
    assert simple_tokenize("cafe\u0301!") == ["cafe\u0301", "!"]  # a combining mark joins the word
    assert simple_tokenize("") == [] and simple_tokenize(" \n") == []


def test_has_answer_and_substring_match_by_hand():
    """metrics.py has_answer (NFD, SimpleTokenizer uncased, answer tokens as a contiguous run of
    the text's) and get_substring_match_score (the "xRAG metric", long context's "acc")."""
    assert substring_match("The answer is U.S. Army", ["U.S."]) == 1.0  # [u . s .] found
    assert substring_match("US Army", ["U.S."]) == 0.0  # [us] is not [u . s .]
    assert substring_match("PARIS!", "paris") == 1.0  # case
    assert substring_match("Parisian food", "Paris") == 0.0  # whole tokens
    assert substring_match("It is the Eiffel Tower", "the Eiffel Tower") == 1.0
    assert substring_match("Eiffel Tower", "the Eiffel Tower") == 0.0  # articles are not dropped here
    assert substring_match("Eiffel\n\tTower.", "eiffel tower") == 1.0  # whitespace and controls separate
    assert substring_match("state-of-the-art", "state of the art") == 0.0  # "-" is a token
    assert substring_match("I don’t know", "don") == 1.0
    assert substring_match("3km away", "3") == 0.0
    assert substring_match("Rome or Paris", ["London", "Paris"]) == 1.0  # any answer
    # Unicode: both sides NFD, so a composed answer matches a decomposed text; no accent folding.
    assert substring_match("CAFE\u0301 de Flore", "Café") == 1.0
    assert substring_match("Café de Flore", "cafe") == 0.0
    # Empty prediction; an answer without tokens matches anything, the empty prediction included.
    assert substring_match("", "Paris") == 0.0
    assert substring_match("", "") == 1.0 and substring_match("anything", " ") == 1.0
    assert has_answer(["x", "Paris"], "in paris") is True


def test_xrag_set_score_is_rounded():
    """metrics.py get_substring_match_score: round(sum / len(outputs), 4)."""
    preds, answers = ["paris", "x", "PARIS!"], ["Paris", "y", ["rome", "paris"]]
    assert score("xrag", preds, answers, percent=False) == 0.6667  # 2/3 rounded to 4 decimals
    assert score("xrag", preds, answers) == pytest.approx(66.67)


# --- Context contains the answer ------------------------------------------------------------------


def test_context_has_answer_by_hand():
    """eval_context_comp.py evaluate_QA "Prop context containing the answer":
    metric_max_over_ground_truths(get_approx_em, cont, gts) with cont the record's list of
    passages, which get_approx_em turns into text with str(): the list's repr."""
    # "['Born in Paris.']" -> "born in paris"
    assert context_has_answer("Born in Paris.", "paris") == 1.0
    assert context_has_answer(["Born in Paris."], ["London", "Paris"]) == 1.0
    # "['Born in\\nParis']": the escape's backslash is punctuation, its "n" stays: "born innparis".
    assert context_has_answer("Born in\nParis", "Paris") == 0.0
    # Non-printable characters are escaped too: "['Paris\\xa0France']" -> "parisxa0france".
    assert context_has_answer("Paris\u00a0France", "France") == 0.0
    # The repr switches to double quotes around an apostrophe: '["It\'s Paris"]' -> "its paris".
    assert context_has_answer("It's Paris", "paris") == 1.0
    # Several passages: "['Berlin is big.', 'Paris is old.']" -> "berlin is big paris is old",
    # so a run across the passage boundary counts.
    assert context_has_answer(["Berlin is big.", "Paris is old."], "big Paris") == 1.0
    # Approximate EM, not has_answer: words, not tokens, and articles dropped.
    assert context_has_answer("It was the U.S. Army.", "US Army") == 1.0
    assert context_has_answer("Parisian", "Paris") == 0.0


def test_context_metric_in_record_scores_and_score():
    """The context rate ignores the prediction; it needs the context (eval_context_comp.py
    evaluate_QA zips contexts with answers, mean over n_samples)."""
    assert record_scores(["context_has_answer"], "whatever", "paris", context="In Paris.") == {
        "context_has_answer": 1.0}
    with pytest.raises(ValueError, match="context"):
        record_scores(["context_has_answer"], "p", "paris")
    contexts = ["In Paris.", ["Rome", "London"], "in\nparis"]
    assert score("context_has_answer", ["a", "b", "c"], ["paris", "london", "paris"], contexts) == pytest.approx(
        100 * 2 / 3)
    with pytest.raises(ValueError, match="context"):
        score("context_has_answer", ["a"], ["paris"])


# --- ROUGE-L and BLEU ------------------------------------------------------------------------------


def test_rouge_l_by_hand():
    """metrics.py get_rouge_score: RougeScorer(["rougeL"], use_stemmer=True).score(pred, answer)
    fmeasure (arguments swapped, F is symmetric), max over answers via
    metric_max_over_ground_truths; CNN's "ROUGE"/"Metric" is the mean."""
    # [polic, kill, the, gunman] vs [the, gunman, was, kill, by, polic]: LCS [the, gunman] = 2,
    # P = 2/4, R = 2/6, F = 2 * (1/6) / (5/6) = 0.4 (stemming makes killed = killed, police = police).
    assert rouge_l("Police killed the gunman", "The gunman was killed by police") == pytest.approx(0.4)
    assert rouge_l("The gunman was killed by police", "Police killed the gunman") == pytest.approx(0.4)
    assert rouge_l("dog", ["cat", "the dog"]) == pytest.approx(2 / 3)  # max over answers
    assert rouge_l("", "anything") == 0.0  # empty prediction
    assert score("rougeL", ["dog", ""], [["cat", "the dog"], "x"], percent=False) == pytest.approx(1 / 3)


def test_bleu_is_corpus_level_by_hand():
    """metrics.py get_bleu_score: SacreBLEU(tokenize="13a", lowercase=True).corpus_score(preds,
    [refs]).score, 0..100 (eval_context_comp.py evaluate_trad "BLEU"/"Metric")."""
    # Pooled: 1-grams 5/9, 2-grams 4/7, 3-grams 3/5, 4-grams 2/3, lengths 9 = 9 (no penalty);
    # the mean of sentence BLEUs would be (100 + 0) / 2 = 50.
    preds, refs = ["a b c d e", "w x y z"], ["a b c d e", "p q r s"]
    expected = 100 * (5 / 9 * 4 / 7 * 3 / 5 * 2 / 3) ** 0.25
    assert corpus_bleu(preds, refs) == pytest.approx(expected, rel=1e-12)
    assert score("bleu", preds, refs) == score("bleu", preds, refs, percent=False) == pytest.approx(expected)
    assert corpus_bleu(["The Cat sat on the mat."], ["the cat sat on the mat ."]) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="corpus"):
        record_scores(["bleu"], "a", "a")


# --- Per kind and aggregation ----------------------------------------------------------------------


def test_reference_metrics_by_kind():
    """eval_context_comp.py evaluate_QA (EM entry: Metric, approx_Metric, xRAG metric, Prop
    context containing the answer; F1 entry; CNN: ROUGE only), evaluate_trad (BLEU), and
    long_context/eval_long_context.py evaluate_long_context (em, acc, f1, rouge;
    METRIC_EVALUATION: F1 for NQA/Qspr, ROUGE for GvRp/QMSum)."""
    assert REFERENCE_METRICS_BY_KIND["qa"][0] == "em"
    assert set(REFERENCE_METRICS_BY_KIND["qa"]) == {"em", "approx_em", "xrag", "context_has_answer", "f1"}
    assert REFERENCE_METRICS_BY_KIND["translation"] == ("bleu",)
    assert REFERENCE_METRICS_BY_KIND["summarization"] == ("rougeL",)
    assert set(REFERENCE_METRICS_BY_KIND["long_context"]) == {"em", "xrag", "f1", "rougeL"}
    assert {LONG_CONTEXT_MAIN_METRIC[k] for k in ("NQA", "Qspr")} == {"f1"}
    assert {LONG_CONTEXT_MAIN_METRIC[k] for k in ("GvRp", "QMSum")} == {"rougeL"}
    assert all(m in METRICS for names in REFERENCE_METRICS_BY_KIND.values() for m in names)


def test_record_scores_and_score_agree():
    """Every set score is the mean of the per-record values over the records (sum / n in
    evaluate_QA), in percent by default and as the reference's fraction with percent=False."""
    preds = ["The Eiffel Tower.", "yes", "", "in Paris, France"]
    answers = [["eiffel tower"], "yes it is", "Paris", ["Paris", "Lyon"]]
    names = ("em", "approx_em", "f1", "xrag", "rougeL")
    rows = [record_scores(names, p, a) for p, a in zip(preds, answers)]
    # By hand: EM 1, 0, 0, 0; approx EM 1, 0, 0, 1; F1 1, 0 (yes rule), 0, and [in, paris, france]
    # against [paris]: P = 1/3, R = 1, F = (2/3) / (4/3) = 1/2.
    assert [r["em"] for r in rows] == [1.0, 0.0, 0.0, 0.0]
    assert [r["approx_em"] for r in rows] == [1.0, 0.0, 0.0, 1.0]
    assert [r["f1"] for r in rows] == pytest.approx([1.0, 0.0, 0.0, 1 / 2])
    assert [r["xrag"] for r in rows] == [1.0, 0.0, 0.0, 1.0]
    for name in names:
        mean = sum(r[name] for r in rows) / len(rows)
        assert score(name, preds, answers, percent=False) == pytest.approx(mean, abs=5e-5 if name == "xrag" else 0)
        assert score(name, preds, answers) == pytest.approx(100 * score(name, preds, answers, percent=False))
    with pytest.raises(ValueError, match="unknown metric"):
        record_scores(["meteor"], "a", "a")
    with pytest.raises(ValueError):
        exact_match("a", [])


# --- The reference's own functions, when at hand ---------------------------------------------------

REFERENCE_GIT = Path(os.environ.get("ARC_REFERENCE_GIT", "/work/.mirror/kyutai-labs+ARC-Encoder/repo"))
REFERENCE_METRICS_PATH = "embed_llm/generation/metrics.py"


@pytest.fixture(scope="module")
def reference():
    """The reference's metrics module, executed from its git mirror (it needs regex, nltk,
    rouge-score and sacrebleu, not torch; its nltk.download call is stubbed: no network)."""
    if not REFERENCE_GIT.exists():
        pytest.skip("no copy of the reference")
    for package in ("regex", "rouge_score", "sacrebleu"):
        pytest.importorskip(package)
    nltk = pytest.importorskip("nltk")
    text = None
    for git_dir in (REFERENCE_GIT, REFERENCE_GIT / ".git"):
        done = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"HEAD:{REFERENCE_METRICS_PATH}"],
                              capture_output=True, text=True)
        if done.returncode == 0:
            text = done.stdout
            break
    if text is None:
        pytest.skip("the reference's metrics file could not be read")
    namespace = {"__name__": "arc_encoder_reference_metrics"}
    with mock.patch.object(nltk, "download", lambda *args, **kwargs: True):
        exec(compile(text, f"reference:{REFERENCE_METRICS_PATH}", "exec"), namespace)
    return namespace


WORDS = (
    "the a an of and to in is was yes no noanswer Yes No-answer Paris paris PARIS Parisian London "
    "Eiffel Tower tower towers U.S. US e.g. Dr. 3.14 1,000 1990-2000 3km state-of-the-art don't "
    "don’t It's café cafe\u0301 Café Zürich İstanbul ΟΔΟΣ straße naïve — – … ! ? , . ; : ( ) [ ] \" ' "
    "police killed gunman running runs ran hopping happiness generalizations"
).split()
SEPARATORS = [" ", " ", " ", "  ", "\n", "\t", "\u00a0", "\u200b", ", ", "-"]


def phrase(rng, n_min, n_max) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(n_min, n_max))]
    return "".join(w + rng.choice(SEPARATORS) for w in words).strip(" ")


def qa_records(n, seed):
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        answers = [phrase(rng, 0, 3) for _ in range(rng.randint(1, 3))]
        r = rng.random()
        pred = (rng.choice(answers) if r < 0.3 else phrase(rng, 0, 3) + " " + rng.choice(answers) if r < 0.6
                else phrase(rng, 0, 6))
        passages = [phrase(rng, 0, 12) + " " + rng.choice(answers) + " " + phrase(rng, 0, 6)
                    for _ in range(rng.randint(1, 3))]
        records.append((pred, answers, passages))
    return records


def test_per_record_metrics_match_the_reference(reference):
    """metrics.py get_em, get_approx_em, get_f1_score, get_rouge_score under
    metric_max_over_ground_truths, has_answer, and the context rate's get_approx_em(str(passages))."""
    best = reference["metric_max_over_ground_truths"]
    for pred, answers, passages in qa_records(400, 0):
        case = (pred, answers, passages)
        assert exact_match(pred, answers) == best(reference["get_em"], pred, answers), case
        assert approx_exact_match(pred, answers) == best(reference["get_approx_em"], pred, answers), case
        assert token_f1(pred, answers) == best(reference["get_f1_score"], pred, answers), case
        assert substring_match(pred, answers) == float(reference["has_answer"](answers, pred)), case
        assert context_has_answer(passages, answers) == best(reference["get_approx_em"], passages, answers), case
        expected_rouge = best(reference["get_rouge_score"], pred, answers)
        assert rouge_l(pred, answers) == pytest.approx(expected_rouge, rel=1e-12, abs=1e-15), case
        tokens = reference["SimpleTokenizer"]().tokenize(pred, uncased=True)
        assert simple_tokenize(pred) == tokens, case


def test_set_scores_match_the_reference(reference):
    """eval_context_comp.py evaluate_QA's sums over len(generated_sequences) / n_samples,
    metrics.py get_substring_match_score (rounded) and get_bleu_score (corpus BLEU)."""
    best = reference["metric_max_over_ground_truths"]
    for seed in range(3):
        records = qa_records(150, 10 + seed)
        preds = [p for p, _, _ in records]
        answers = [a for _, a, _ in records]
        contexts = [c for _, _, c in records]
        for name, fn in (("em", "get_em"), ("approx_em", "get_approx_em"), ("f1", "get_f1_score"),
                         ("rougeL", "get_rouge_score")):
            expected = sum([best(reference[fn], p, a) for p, a in zip(preds, answers)]) / len(preds)
            assert score(name, preds, answers, percent=False) == pytest.approx(expected, rel=1e-12, abs=1e-15)
        expected, _ = reference["get_substring_match_score"](preds, answers)
        assert score("xrag", preds, answers, percent=False) == expected
        expected = sum([best(reference["get_approx_em"], c, a) for c, a in zip(contexts, answers)]) / len(preds)
        assert score("context_has_answer", preds, answers, contexts, percent=False) == pytest.approx(expected)
        references = [a[0] for a in answers]
        expected = reference["get_bleu_score"](references, preds)
        assert score("bleu", preds, references) == pytest.approx(expected, rel=1e-9, abs=1e-12)

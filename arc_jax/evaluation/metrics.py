"""The paper's evaluation metrics, computed as the reference (kyutai-labs/ARC-Encoder) computes
them, in pure Python (no sacrebleu, rouge-score, nltk or regex needed; the tests check agreement
with those packages and, when a copy of the reference is at hand, with its own metric functions).

What the reference computes (embed_llm/generation/metrics.py; used by eval_context_comp.py
evaluate_QA / evaluate_trad, eval_context_comp_baselines.py, long_context/eval_long_context.py):

- Normalisation (`normalize_answer`, SQuAD v1.1's): lowercase, drop ASCII punctuation, drop the
  whole words a/an/the, collapse whitespace. No unicode folding.
- EM (`get_em`): normalised prediction == normalised answer; max over the answers.
- Approximate EM (`get_approx_em`): the normalised answer's words, split on " ", occur as a
  contiguous run in the normalised prediction's; max over the answers. An answer that normalises
  to "" (e.g. "The") matches only a prediction that normalises to "" too.
- F1 (`get_f1_score`): SQuAD token F1 of the normalised words, except that when either side
  normalises to "yes", "no" or "noanswer" and the two differ it is 0; an empty side gives 0
  (empty against empty included); max over the answers.
- xRAG metric / long-context "acc" (`get_substring_match_score` -> `has_answer`): some answer's
  token sequence occurs in the prediction's. Tokens: text NFD-normalised, then runs of letters,
  digits and marks (\\p{L}\\p{N}\\p{M}) or single characters that are neither separators nor
  control/format/unassigned (\\p{Z}, \\p{C}), each token lowercased on its own. An answer with no
  tokens matches anything. The set mean is rounded to 4 decimals. (Categories come from Python's
  unicodedata; the regex package's newer tables differ only on code points unassigned there.)
- "Prop context containing the answer": approximate EM of `str(passages)` against the answers
  (not the has_answer test). `passages` is the record's list of passages (one stripped passage by
  default, the top k unstripped with several), and its Python repr keeps backslash escapes: a
  newline becomes backslash-n, the backslash goes with the punctuation and the "n" joins its
  neighbours ("in<newline>Paris" -> "innparis"). Pass the list, not passages joined into one text.
- BLEU (`get_bleu_score`): `sacrebleu.metrics.BLEU(tokenize="13a", lowercase=True)
  .corpus_score(predictions, [references])`: corpus BLEU, one reference per sentence, 0..100.
- ROUGE-L (`get_rouge_score`): `RougeScorer(["rougeL"], use_stemmer=True).score(prediction,
  answer)["rougeL"].fmeasure` (arguments swapped against rouge-score's (target, prediction),
  which F does not see); max over the answers.

What it reports per benchmark kind (all means over the evaluated records, as fractions 0..1 in its
results JSON but BLEU on 0..100; the paper prints them in percent):

- QA (NQ, TriviaQA, SQuAD, DistractorHotpotQA; main metric EM): EM, approximate EM, xRAG metric,
  proportion of contexts containing the answer, F1.
- Translation (FLORES English -> Danish, French, German, Spanish): corpus BLEU per language; the
  paper averages the four directions.
- Summarisation (CNN/DailyMail, at most 1000 records): ROUGE-L only.
- Long context (ZeroSCROLLS NarrativeQA, Qasper, GovReport, QMSum): em, acc (the xRAG metric), f1
  and rouge for every benchmark (np.mean); the paper reports F1 on NarrativeQA and Qasper and
  ROUGE-L on GovReport and QMSum (`LONG_CONTEXT_MAIN_METRIC`). np.mean's pairwise sum can differ
  from `score`'s sequential one in the last bits.

Where arc_jax's numbers changed when it moved to these rules: F1 of an empty prediction against
an empty answer is now 0 (was 1, SQuAD v2's rule), and a yes/no/noanswer mismatch is 0 (e.g.
"yes" against "yes it is" was 0.5); EM, BLEU and ROUGE-L were already the reference's.

`score(metric, predictions, answers, contexts=None)` aggregates a metric over a set, in percent by
default (`percent=False`: the reference's own scale); `record_scores` gives the per-record values.
"""

from __future__ import annotations

import collections
import functools
import math
import re
import string
import unicodedata
from typing import Callable, Mapping, Sequence

Answers = str | Sequence[str]
Context = str | Sequence[str]


def _as_list(answers: Answers) -> list[str]:
    answers = [answers] if isinstance(answers, str) else list(answers)
    if not answers:
        raise ValueError("no reference answer to score against")
    return answers


# --- Normalised-answer metrics: EM, approximate EM, F1 -------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, drop ASCII punctuation, drop the articles a/an/the (whole
    words), collapse whitespace. Punctuation goes first, so "the-end" -> "theend" keeps its "the"."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, answers: Answers) -> float:
    """1.0 if the normalised prediction equals some normalised answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in _as_list(answers)))


def _contains_run(words: list[str], run: list[str]) -> bool:
    """Whether `run` occurs as a contiguous slice of `words` (an empty run occurs everywhere)."""
    n = len(run)
    return any(words[i:i + n] == run for i in range(len(words) - n + 1))


def approx_exact_match(prediction: str, answers: Answers) -> float:
    """1.0 if some normalised answer's words occur as a contiguous run in the normalised
    prediction's, else 0.0. Words are split on " ", so an empty normalisation is the one word ""."""
    pred = normalize_answer(str(prediction)).split(" ")
    return float(any(_contains_run(pred, normalize_answer(str(a)).split(" ")) for a in _as_list(answers)))


_CLOSED_ANSWERS = ("yes", "no", "noanswer")


def _f1(prediction: str, answer: str) -> float:
    pred, gold = normalize_answer(prediction), normalize_answer(answer)
    if (pred in _CLOSED_ANSWERS or gold in _CLOSED_ANSWERS) and pred != gold:
        return 0.0
    pred_tokens, gold_tokens = pred.split(), gold.split()
    overlap = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
    if overlap == 0:  # an empty side included, empty against empty too
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: Answers) -> float:
    """Token F1 of the normalised words (bag-of-words overlap), 0 on a yes/no/noanswer mismatch or
    an empty side; max over answers."""
    return max(_f1(prediction, a) for a in _as_list(answers))


# --- Answer-in-text tests: the xRAG metric and the context rate ----------------------------------

def _char_kind(ch: str) -> int:
    """0: letter, digit or mark (joins a word run); 1: a one-character token; 2: separator,
    control, format, private-use or unassigned character (no token)."""
    major = unicodedata.category(ch)[0]
    return 0 if major in "LNM" else 2 if major in "ZC" else 1


def simple_tokenize(text: str) -> list[str]:
    """The tokens `has_answer` compares, lowercased one by one: maximal runs of letters, digits
    and combining marks, and every other visible character on its own. `text` is taken as is
    (`has_answer` NFD-normalises first)."""
    tokens, run = [], []
    for ch in text:
        kind = _char_kind(ch)
        if kind == 0:
            run.append(ch)
            continue
        if run:
            tokens.append("".join(run).lower())
            run = []
        if kind == 1:
            tokens.append(ch.lower())
    if run:
        tokens.append("".join(run).lower())
    return tokens


def has_answer(answers: Answers, text: str) -> bool:
    """Whether the token sequence of some answer occurs in `text`'s (both NFD-normalised and
    tokenised by `simple_tokenize`)."""
    words = simple_tokenize(unicodedata.normalize("NFD", text))
    return any(_contains_run(words, simple_tokenize(unicodedata.normalize("NFD", a))) for a in _as_list(answers))


def substring_match(prediction: str, answers: Answers) -> float:
    """The xRAG metric of one record (long context's "acc"): 1.0 if the prediction contains an
    answer by `has_answer`, else 0.0."""
    return float(has_answer(answers, prediction))


def context_has_answer(context: Context, answers: Answers) -> float:
    """1.0 if the record's context "contains the answer" as the reference counts it, else 0.0:
    approximate EM of `str(passages)` against the answers, `passages` being the list of passages
    the record was evaluated with (a string is one passage, the reference's single-passage list).
    The repr's quotes and brackets are punctuation and vanish; its escapes lose their backslash, so
    a newline joins its neighbours ("in\\nParis" -> "innparis")."""
    passages = [context] if isinstance(context, str) else list(context)
    return approx_exact_match(str(passages), answers)


# --- BLEU ----------------------------------------------------------------------------------------

# mteval-v13a splits off every ASCII symbol but the apostrophe, hyphen, period and comma, which
# have their own rules below (the space is in the set too, which changes nothing).
_SYMBOLS = "".join(sorted(set(string.punctuation + " ") - set("'-.,")))
_V13A_RULES = (
    (re.compile("([" + re.escape(_SYMBOLS) + "])"), r" \1 "),
    (re.compile(r"([^0-9])([.,])"), r"\1 \2 "),  # period/comma not after a digit
    (re.compile(r"([.,])([^0-9])"), r" \1 \2"),  # period/comma not before a digit: 3.14, 1,000 stay
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # hyphen after a digit: 1990-2000
)
_ENTITIES = (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"))


def tokenize_13a(line: str) -> list[str]:
    """sacrebleu's "13a" tokenisation (mteval-v13a, the WMT standard) of one segment.

    Drops "<skipped>", joins words hyphenated across a line break, unescapes four HTML entities,
    then spaces out symbols with the regex rules above, in order (each rule sees the output of the
    previous one), and splits on whitespace.
    """
    line = line.rstrip().replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    for entity, char in _ENTITIES:
        line = line.replace(entity, char)
    line = f" {line} "
    for pattern, replacement in _V13A_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


def _ngram_counts(tokens: list[str], max_order: int) -> collections.Counter:
    return collections.Counter(tuple(tokens[i:i + n]) for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1))


def _closest_length(hyp_len: int, ref_lens: list[int]) -> int:
    """The reference length nearest the hypothesis length; ties go to the shorter reference."""
    return min(ref_lens, key=lambda r: (abs(r - hyp_len), r))


def corpus_bleu(predictions: Sequence[str], references: Sequence[Answers], lowercase: bool = True,
                max_order: int = 4) -> float:
    """Corpus BLEU on 0..100, as `sacrebleu.corpus_bleu(predictions, streams, lowercase=lowercase)`.

    `references[i]` holds prediction i's reference (a string) or references (a list; n-gram
    clipping takes the max count over them and the brevity penalty the closest length). Note the
    layout: per prediction, where sacrebleu takes reference *streams* (`streams[k][i]`).
    Statistics are pooled over the corpus before the geometric mean; an order without a match gets
    'exp' smoothing: the k-th such order counts 1 / 2**k matches.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    prep = (lambda s: tokenize_13a(s.lower())) if lowercase else tokenize_13a
    matches, totals = [0] * max_order, [0] * max_order
    hyp_length = ref_length = 0
    for prediction, refs in zip(predictions, references):
        hyp = prep(prediction)
        ref_tokens = [prep(r) for r in _as_list(refs)]
        ref_counts: collections.Counter = collections.Counter()
        for tokens in ref_tokens:
            ref_counts |= _ngram_counts(tokens, max_order)  # | keeps the max count of each n-gram
        for ngram, count in _ngram_counts(hyp, max_order).items():
            totals[len(ngram) - 1] += count
            matches[len(ngram) - 1] += min(count, ref_counts[ngram])
        hyp_length += len(hyp)
        ref_length += _closest_length(len(hyp), [len(t) for t in ref_tokens])
    if not any(matches):
        return 0.0
    log_precisions, halvings = [], 0
    for n in range(max_order):
        if totals[n] == 0:  # no hypothesis that long: precision 0, the score vanishes
            return 0.0
        if matches[n] == 0:
            halvings += 1
            precision = 100.0 / (2**halvings * totals[n])
        else:
            precision = 100.0 * matches[n] / totals[n]
        log_precisions.append(math.log(precision))
    brevity = 1.0 if hyp_length >= ref_length else math.exp(1 - ref_length / hyp_length)
    return brevity * math.exp(sum(log_precisions) / max_order)


# --- Porter stemmer (NLTK's default variant, as rouge-score uses it) -----------------------------

_VOWELS = frozenset("aeiou")


def _consonant_flags(word: str) -> list[bool]:
    """Porter's consonants: letters other than a, e, i, o, u, and other than a y after a consonant."""
    flags: list[bool] = []
    for ch in word:
        flags.append(ch not in _VOWELS and not (ch == "y" and flags and flags[-1]))
    return flags


def _measure(stem: str) -> int:
    """m in [C](VC)^m[V]: the number of vowel-to-consonant transitions."""
    flags = _consonant_flags(stem)
    return sum(1 for prev, cur in zip(flags, flags[1:]) if cur and not prev)


def _has_vowel(stem: str) -> bool:
    return not all(_consonant_flags(stem))


def _ends_double_consonant(word: str) -> bool:
    return len(word) >= 2 and word[-1] == word[-2] and _consonant_flags(word)[-1]


def _ends_cvc(word: str) -> bool:
    """*o: consonant-vowel-consonant, the last not w, x or y; NLTK also counts a two-letter
    vowel-consonant word (any consonant)."""
    c = _consonant_flags(word)
    if len(word) == 2:
        return not c[0] and c[1]
    return len(word) >= 3 and c[-3] and not c[-2] and c[-1] and word[-1] not in "wxy"


Rule = tuple[str, str, Callable[[str], bool]]


def _apply_first(word: str, rules: Sequence[Rule]) -> str:
    """The first rule whose suffix ends `word` decides: replace it if its condition holds for the
    remaining stem, else leave the word as is (no later, shorter suffix is tried)."""
    for suffix, replacement, condition in rules:
        if word.endswith(suffix):
            stem = word[: len(word) - len(suffix)]
            return stem + replacement if condition(stem) else word
    return word


_m_positive = lambda stem: _measure(stem) > 0
_m_above_one = lambda stem: _measure(stem) > 1

_STEP2: tuple[Rule, ...] = tuple((s, r, _m_positive) for s, r in (
    ("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"), ("izer", "ize"),
    ("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous"),
    ("ization", "ize"), ("ation", "ate"), ("ator", "ate"), ("alism", "al"), ("iveness", "ive"),
    ("fulness", "ful"), ("ousness", "ous"), ("aliti", "al"), ("iviti", "ive"), ("biliti", "ble"),
    ("fulli", "ful"),
)) + (("logi", "log", lambda stem: _measure(stem + "l") > 0),)  # NLTK measures the stem with its "l"
_STEP3: tuple[Rule, ...] = tuple((s, r, _m_positive) for s, r in (
    ("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"), ("ical", "ic"), ("ful", ""), ("ness", ""),
))
_STEP4: tuple[Rule, ...] = tuple((s, "", _m_above_one) for s in (
    "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent",
)) + (("ion", "", lambda stem: _measure(stem) > 1 and stem[-1] in "st"),) + tuple((s, "", _m_above_one) for s in (
    "ou", "ism", "ate", "iti", "ous", "ive", "ize",
))

# NLTK's exceptions, looked up before any step.
_IRREGULAR = {"skies": "sky", "sky": "sky", "dying": "die", "lying": "lie", "tying": "tie", "news": "news",
              "innings": "inning", "inning": "inning", "outings": "outing", "outing": "outing",
              "cannings": "canning", "canning": "canning", "howe": "howe", "proceed": "proceed",
              "exceed": "exceed", "succeed": "succeed"}


def _step1a(word: str) -> str:
    if word.endswith("ies") and len(word) == 4:  # NLTK: ties -> tie, not ti
        return word[:-1]
    for suffix, replacement in (("sses", "ss"), ("ies", "i"), ("ss", "ss"), ("s", "")):
        if word.endswith(suffix):
            return word[: len(word) - len(suffix)] + replacement
    return word


def _step1b(word: str) -> str:
    if word.endswith("ied"):  # NLTK: died -> die, cried -> cri
        return word[:-1] if len(word) == 4 else word[:-2]
    if word.endswith("eed"):
        return word[:-1] if _measure(word[:-3]) > 0 else word
    for suffix in ("ed", "ing"):
        if word.endswith(suffix) and _has_vowel(word[: len(word) - len(suffix)]):
            stem = word[: len(word) - len(suffix)]
            break
    else:
        return word
    # Tidy the stem so step 4 can see -ate, -ble, -ize, and undouble consonants (hopp -> hop).
    if stem.endswith(("at", "bl", "iz")):
        return stem + "e"
    if _ends_double_consonant(stem):
        return stem if stem[-1] in "lsz" else stem[:-1]
    return stem + "e" if _measure(stem) == 1 and _ends_cvc(stem) else stem


def _step1c(word: str) -> str:
    # NLTK: y -> i after a consonant that is not the whole stem (happy -> happi, enjoy, sky stay).
    if word.endswith("y") and len(word) > 2 and _consonant_flags(word[:-1])[-1]:
        return word[:-1] + "i"
    return word


def _step2(word: str) -> str:
    if word.endswith("alli") and _measure(word[:-4]) > 0:  # NLTK: -alli -> -al, then step 2 again
        return _step2(word[:-2])
    return _apply_first(word, _STEP2)


def _step5(word: str) -> str:
    if word.endswith("e"):
        m = _measure(word[:-1])
        if m > 1 or (m == 1 and not _ends_cvc(word[:-1])):
            word = word[:-1]
    if word.endswith("ll") and _measure(word[:-1]) > 1:
        word = word[:-1]
    return word


@functools.lru_cache(maxsize=1 << 16)
def porter_stem(word: str) -> str:
    """Porter (1980) stem of a lowercase word with NLTK's extensions, i.e. what nltk's
    `PorterStemmer().stem` (mode NLTK_EXTENSIONS, rouge-score's stemmer) returns. Digits count as
    consonants."""
    word = word.lower()
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 2:
        return word
    word = _step2(_step1c(_step1b(_step1a(word))))
    return _step5(_apply_first(_apply_first(word, _STEP3), _STEP4))


# --- ROUGE-L -------------------------------------------------------------------------------------

_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")


def rouge_tokenize(text: str) -> list[str]:
    """rouge-score's default tokens with stemming: lowercase, runs of [a-z0-9], tokens longer
    than 3 characters Porter-stemmed."""
    tokens = _NON_ALPHANUMERIC.sub(" ", text.lower()).split()
    return [t for t in (porter_stem(t) if len(t) > 3 else t for t in tokens) if t]


def _lcs_length(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)  # row[j]: LCS of the prefix of a seen so far and b[:j]
    for x in a:
        diagonal = 0
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], diagonal + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(prediction: str, references: Answers) -> float:
    """ROUGE-L F-measure on 0..1, 2PR/(P+R) with P and R the longest common subsequence over
    the prediction's and the reference's token counts; max over references. An empty side scores 0."""
    pred = rouge_tokenize(prediction)
    best = 0.0
    for reference in _as_list(references):
        ref = rouge_tokenize(reference)
        lcs = _lcs_length(ref, pred) if pred and ref else 0
        if lcs:
            precision, recall = lcs / len(pred), lcs / len(ref)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


# --- Per record and aggregated -------------------------------------------------------------------

_PER_RECORD: dict[str, Callable[[str, Answers], float]] = {
    "em": exact_match, "approx_em": approx_exact_match, "f1": token_f1, "xrag": substring_match,
    "rougeL": rouge_l,
}
CONTEXT_METRICS = ("context_has_answer",)
CORPUS_METRICS = ("bleu",)
METRICS = (*_PER_RECORD, *CONTEXT_METRICS, *CORPUS_METRICS)

# The metrics the reference reports per benchmark kind, its main one first.
REFERENCE_METRICS_BY_KIND: Mapping[str, tuple[str, ...]] = {
    "qa": ("em", "approx_em", "xrag", "context_has_answer", "f1"),
    "translation": ("bleu",),
    "summarization": ("rougeL",),
    "long_context": ("f1", "rougeL", "em", "xrag"),
}
# Long context: the paper's metric per ZeroSCROLLS benchmark (long_context/eval_long_context.py
# METRIC_EVALUATION, keyed by its names NQA, Qspr, GvRp, QMSum, and by the datasets' own).
LONG_CONTEXT_MAIN_METRIC: Mapping[str, str] = {
    "NQA": "f1", "Qspr": "f1", "GvRp": "rougeL", "QMSum": "rougeL",
    "narrativeqa": "f1", "qasper": "f1", "gov_report": "rougeL", "qmsum": "rougeL"}
# Where each number sits in the reference's results JSON ("<entry>/<field>"; long context: key).
REFERENCE_NAMES: Mapping[str, Mapping[str, str]] = {
    "qa": {"em": "EM/Metric", "approx_em": "EM/approx_Metric", "xrag": "EM/xRAG metric",
           "context_has_answer": "EM/Prop context containing the answer", "f1": "F1/Metric"},
    "translation": {"bleu": "BLEU/Metric"},
    "summarization": {"rougeL": "ROUGE/Metric"},
    "long_context": {"em": "em", "xrag": "acc", "f1": "f1", "rougeL": "rouge"},
}


def record_scores(metric_names: Sequence[str], prediction: str, answers: Answers,
                  context: Context | None = None) -> dict[str, float]:
    """The per-record values (0..1) of `metric_names` for one prediction: any of em, approx_em,
    f1, xrag, rougeL, and context_has_answer (which needs the record's `context`: its passages, or
    one passage's text, and ignores the prediction). BLEU is a corpus metric: use `score`."""
    out = {}
    for name in metric_names:
        if name in _PER_RECORD:
            out[name] = _PER_RECORD[name](prediction, answers)
        elif name in CONTEXT_METRICS:
            if context is None:
                raise ValueError(f"{name} needs the record's context")
            out[name] = context_has_answer(context, answers)
        elif name in CORPUS_METRICS:
            raise ValueError(f"{name} is a corpus metric, not a per-record one: use score()")
        else:
            raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return out


def score(metric: str, predictions: Sequence[str], answers: Sequence[Answers],
          contexts: Sequence[Context] | None = None, percent: bool = True) -> float:
    """`metric` (one of METRICS) over a set: the mean of the per-record values (each a max over
    the record's answers), the xRAG mean rounded to 4 decimals as the reference does, or corpus
    BLEU. In percent (BLEU is 0..100 either way); `percent=False` gives the reference's own
    numbers, fractions 0..1. context_has_answer reads `contexts` (one per prediction)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answer sets")
    if not predictions:
        raise ValueError("no predictions to score")
    if metric == "bleu":
        return corpus_bleu(predictions, answers)
    if metric in CONTEXT_METRICS:
        if contexts is None or len(contexts) != len(predictions):
            raise ValueError(f"{metric} needs one context per prediction")
        values = [context_has_answer(c, a) for c, a in zip(contexts, answers)]
    else:
        fn = _PER_RECORD[metric]
        values = [fn(p, a) for p, a in zip(predictions, answers)]
    mean = sum(values) / len(values)
    if metric == "xrag":
        mean = round(mean, 4)
    return 100.0 * mean if percent else mean

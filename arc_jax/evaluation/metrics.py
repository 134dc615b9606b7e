"""The paper's evaluation metrics, in pure Python: exact match and token F1 (SQuAD), corpus BLEU
(sacrebleu's defaults) and ROUGE-L (rouge-score's, with stemming).

Each metric reproduces the number the reference tool prints, so scores compare with published
ones without the tool installed (the tests check agreement with sacrebleu and rouge-score):

- `exact_match` / `token_f1`: the SQuAD v1.1 evaluation script's normalisation and token F1, max
  over reference answers. One deviation, SQuAD v2's: F1 of an empty prediction against an empty
  answer is 1 (v1.1 gives 0).
- `corpus_bleu`: `sacrebleu.corpus_bleu(preds, refs, lowercase=True, tokenize="13a")`, i.e. the
  mteval-v13a tokenisation, 1..4-gram clipped precisions pooled over the corpus, 'exp' smoothing
  (the NIST one) and the brevity penalty against the closest reference length; 0..100.
- `rouge_l`: `RougeScorer(["rougeL"], use_stemmer=True)` F-measure: lowercase, keep runs of
  [a-z0-9], Porter-stem tokens longer than 3 characters (NLTK's default variant, which
  rouge-score uses), F of the longest common subsequence; max over references.

`score` aggregates any of them over a set, in percent.
"""

from __future__ import annotations

import collections
import functools
import math
import re
import string
from typing import Callable, Sequence

Answers = str | Sequence[str]


def _as_list(answers: Answers) -> list[str]:
    answers = [answers] if isinstance(answers, str) else list(answers)
    if not answers:
        raise ValueError("no reference answer to score against")
    return answers


# --- SQuAD exact match and token F1 --------------------------------------------------------------

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


def _f1(pred_tokens: list[str], answer_tokens: list[str]) -> float:
    if not pred_tokens or not answer_tokens:
        return float(pred_tokens == answer_tokens)  # both empty: a perfect (empty) answer
    overlap = sum((collections.Counter(pred_tokens) & collections.Counter(answer_tokens)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(answer_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: Answers) -> float:
    """SQuAD token F1 (bag-of-words overlap of normalised tokens), max over answers."""
    pred = normalize_answer(prediction).split()
    return max(_f1(pred, normalize_answer(a).split()) for a in _as_list(answers))


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


# --- Aggregation ---------------------------------------------------------------------------------

_PER_EXAMPLE = {"em": exact_match, "f1": token_f1, "rougeL": rouge_l}
METRICS = (*_PER_EXAMPLE, "bleu")


def score(metric: str, predictions: Sequence[str], answers: Sequence[Answers]) -> float:
    """`metric` ("em", "f1", "rougeL" or "bleu") over a set, in percent: the mean of the
    per-example score (max over each example's answers) for em/f1/rougeL, corpus BLEU for bleu."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answer sets")
    if not predictions:
        raise ValueError("no predictions to score")
    if metric == "bleu":
        return corpus_bleu(predictions, answers)
    fn = _PER_EXAMPLE[metric]
    return 100.0 * sum(fn(p, a) for p, a in zip(predictions, answers)) / len(predictions)

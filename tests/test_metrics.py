"""Evaluation metrics (the paper's EM, F1, BLEU, ROUGE-L): hand-worked examples for each, and agreement with the reference
implementations (the SQuAD v1.1 script's logic, sacrebleu, rouge-score, nltk's Porter stemmer) on
a few hundred generated sentence pairs full of what tokenisers trip on."""

import collections
import math
import random
import re
import string

import pytest

from arc_jax.evaluation import metrics
from arc_jax.evaluation.metrics import (
    corpus_bleu,
    exact_match,
    normalize_answer,
    porter_stem,
    rouge_l,
    rouge_tokenize,
    score,
    token_f1,
    tokenize_13a,
)

WORDS = (
    "the a an of and to in is was for on that with as by at from it this be are were has had not but "
    "river bank city council report market prices generalizations oscillators agreed happiness "
    "relational conditional running hopping hoped caresses ponies ties skies dying news innings "
    "national rationally electrical formality sensitivity adjustment dependent adoption replacement "
    "communism activate effective bowdlerize probate controlling rolled feeds feed bled motoring sing "
    "happily enjoying enjoyment flies tried spied analogously callousness hopefulness decisiveness "
    "university universal universe organization organizing organ Paris London Obama NASA iPhone "
    "don't it's we're o'clock rock'n'roll state-of-the-art well-known e-mail co-operate x-ray "
    "U.S. e.g. i.e. Dr. Mr. etc. 3.14 1,000 10,000.50 1990-2000 2-3 $5 5% #1 @home 24/7 a+b C++ "
    "&amp; &quot; &lt; &gt; &amp;quot; AT&amp;T Q&amp;A <b>bold</b> <skipped> [1] {x} (see) ~tilde "
    "façade naïve Zürich straße İstanbul -- ... ! ? ; : \" ' ` ^ _ | \\"
).split()


def sentence(rng, n_min=1, n_max=25) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(n_min, n_max))]
    words = [w.upper() if rng.random() < 0.05 else w.capitalize() if rng.random() < 0.1 else w for w in words]
    seps = [rng.choice([" ", " ", " ", " ", ", ", ". ", "-", " - ", "  ", "\t", "\n", "-\n"]) for _ in words]
    text = "".join(w + s for w, s in zip(words, seps)).strip()
    return text + rng.choice(["", ".", "!", "?", " .", "...", '."'])


def perturb(rng, text: str) -> str:
    """A prediction that partly overlaps its reference: words dropped, swapped, replaced, re-cased."""
    words = text.split(" ")
    out = []
    for w in words:
        r = rng.random()
        if r < 0.1:
            continue
        out.append(rng.choice(WORDS) if r < 0.25 else w.lower() if r < 0.35 else w)
    if len(out) > 2 and rng.random() < 0.3:
        i = rng.randrange(len(out) - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
    return " ".join(out)


def pairs(n, seed):
    rng = random.Random(seed)
    refs = [sentence(rng) for _ in range(n)]
    preds = [perturb(rng, r) if rng.random() < 0.9 else sentence(rng) for r in refs]
    return preds, refs


# --- SQuAD exact match and F1 -------------------------------------------------------------------


def test_normalize_answer_by_hand():
    # lowercase; punctuation removed (so "U.S." -> "us"); articles removed as whole words only.
    assert normalize_answer("The  U.S. Army!") == "us army"
    assert normalize_answer("An apple, a day") == "apple day"
    assert normalize_answer("theater anagram") == "theater anagram"  # "the"/"an"/"a" inside words stay
    assert normalize_answer("the-end") == "theend"  # punctuation goes first: no article left to drop
    assert normalize_answer("  \tA\n") == ""


def test_exact_match_by_hand():
    assert exact_match("The Eiffel Tower.", "eiffel tower") == 1.0
    assert exact_match("Eiffel", ["Tower", "eiffel!"]) == 1.0  # max over answers
    assert exact_match("Eiffel Tower in Paris", ["Eiffel Tower"]) == 0.0
    with pytest.raises(ValueError):
        exact_match("x", [])


def test_token_f1_by_hand():
    # pred "the cat sat on mat" -> [cat, sat, on, mat]; answer "a cat on the mat" -> [cat, on, mat]
    # overlap 3: P = 3/4, R = 3/3, F1 = 2 * 0.75 * 1 / 1.75 = 6/7
    assert token_f1("the cat sat on mat", "a cat on the mat") == pytest.approx(6 / 7)
    # repeated tokens count with multiplicity: [b, b, c] vs [b, c, c] overlap in one b and one c,
    # P = R = 2/3, F1 = 2/3
    assert token_f1("b b c", "b c c") == pytest.approx(2 / 3)
    # max over answers: 0 against "dog", 1 against "Cat."
    assert token_f1("cat", ["dog", "Cat."]) == 1.0
    assert token_f1("", "the") == 0.0  # both normalise to empty: no overlap, 0 (the reference's get_f1_score)
    assert token_f1("", "dog") == 0.0 and token_f1("dog", "a") == 0.0
    assert token_f1("dog", "cat") == 0.0


def squad_reference(prediction, answers):
    """The SQuAD v1.1 evaluate script's logic, written out independently (the reference's
    get_f1_score adds a yes/no/noanswer rule, which these words never trigger)."""

    def norm(s):
        s = s.lower()
        s = "".join(ch for ch in s if ch not in set(string.punctuation))
        s = re.sub(r"\b(a|an|the)\b", " ", s)
        return " ".join(s.split())

    def f1(p, g):
        p, g = norm(p).split(), norm(g).split()
        same = sum((collections.Counter(p) & collections.Counter(g)).values())
        if same == 0:
            return 0.0
        precision, recall = same / len(p), same / len(g)
        return 2 * precision * recall / (precision + recall)

    return max(float(norm(prediction) == norm(a)) for a in answers), max(f1(prediction, a) for a in answers)


def test_em_f1_match_squad_logic():
    rng = random.Random(1)
    for _ in range(300):
        answers = [sentence(rng, 0, 4) for _ in range(rng.randint(1, 3))]
        pred = perturb(rng, rng.choice(answers)) if rng.random() < 0.8 else sentence(rng, 0, 4)
        em, f1 = squad_reference(pred, answers)
        assert exact_match(pred, answers) == em
        assert token_f1(pred, answers) == pytest.approx(f1, rel=1e-12, abs=0)


# --- BLEU -----------------------------------------------------------------------------------------


def test_tokenize_13a_by_hand():
    # Symbols split off; period/comma kept inside numbers; hyphen split only after a digit;
    # apostrophes untouched; four entities unescaped.
    assert tokenize_13a("Hello, world.") == ["Hello", ",", "world", "."]
    assert tokenize_13a("pi is 3.14, not 1,000.") == ["pi", "is", "3.14", ",", "not", "1,000", "."]
    assert tokenize_13a("state-of-the-art 1990-2000") == ["state-of-the-art", "1990", "-", "2000"]
    assert tokenize_13a("don't &quot;AT&amp;T&quot;") == ["don't", '"', "AT", "&", "T", '"']
    assert tokenize_13a("(a)<skipped>[b]") == ["(", "a", ")", "[", "b", "]"]
    assert tokenize_13a("hyphen-\nated line\nbreak") == ["hyphenated", "line", "break"]


def test_corpus_bleu_by_hand():
    # Identical: every precision 1, no brevity penalty.
    assert corpus_bleu(["The cat sat on the mat."], ["the cat sat on the mat ."]) == pytest.approx(100.0)
    # hyp "the cat sat on the mat" (6 tokens) vs ref "the cat sat on a mat" (6 tokens):
    # 1-grams 5/6 (the x2 vs ref's one "the": clipped), 2-grams 3/5 (the cat, cat sat, sat on),
    # 3-grams 2/4, 4-grams 1/3; BP = 1.
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert corpus_bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(expected, rel=1e-12)
    # hyp "the cat" vs ref "the cat sat here": 1-grams 2/2, 2-grams 1/1, no 3-grams at all -> 0.
    assert corpus_bleu(["the cat"], ["the cat sat here"]) == 0.0
    # 'exp' smoothing: hyp "a b c d" vs ref "a b x d e": 1-grams 3/4, 2-grams 1/3, 3-grams 0/2 -> 1/(2*2),
    # 4-grams 0/1 -> 1/(4*1); BP = exp(1 - 5/4).
    expected = 100 * math.exp(1 - 5 / 4) * (3 / 4 * 1 / 3 * 1 / 4 * 1 / 4) ** 0.25
    assert corpus_bleu(["a b c d"], ["a b x d e"]) == pytest.approx(expected, rel=1e-12)
    # Statistics pool over the corpus: the first pair alone has no 4-gram match, the second does.
    assert corpus_bleu(["a b c d", "w x y z"], ["a b x d e", "w x y z"]) > corpus_bleu(["a b c d"], ["a b x d e"])
    # Case: lowercased by default; mixed case on request.
    assert corpus_bleu(["THE CAT SAT DOWN"], ["the cat sat down"]) == pytest.approx(100.0)
    assert corpus_bleu(["THE CAT SAT DOWN"], ["the cat sat down"], lowercase=False) == 0.0


def test_corpus_bleu_multiple_references_by_hand():
    # Closest reference length, ties to the shorter: hyp of 4 tokens vs refs of 3 and 5 -> 3, no penalty.
    assert corpus_bleu(["a b c d"], [["a b c d e", "a b c"]]) == pytest.approx(100.0)
    # Clipping takes the max count over references: "a a" is matched twice thanks to the second ref.
    one_ref = corpus_bleu(["a a b c d"], ["a b c d x"])
    two_refs = corpus_bleu(["a a b c d"], [["a b c d x", "x a a y z"]])
    assert two_refs > one_ref


def test_corpus_bleu_matches_sacrebleu():
    sacrebleu = pytest.importorskip("sacrebleu")
    for seed in range(3):
        preds, refs = pairs(200, seed)
        expected = sacrebleu.corpus_bleu(preds, [refs], lowercase=True, tokenize="13a").score
        assert corpus_bleu(preds, refs) == pytest.approx(expected, rel=1e-6)
        cased = sacrebleu.corpus_bleu(preds, [refs], lowercase=False, tokenize="13a").score
        assert corpus_bleu(preds, refs, lowercase=False) == pytest.approx(cased, rel=1e-6)
    # Tokenisation itself, segment by segment.
    tok = sacrebleu.BLEU(tokenize="13a").tokenizer
    for text in preds + refs:
        assert tokenize_13a(text) == tok(text.rstrip()).split(), text
    # Two references per prediction (sacrebleu takes them as two streams).
    preds, refs = pairs(200, 7)
    _, refs2 = pairs(200, 8)
    expected = sacrebleu.corpus_bleu(preds, [refs, refs2], lowercase=True).score
    assert corpus_bleu(preds, list(zip(refs, refs2))) == pytest.approx(expected, rel=1e-6)
    # Short corpora and edge cases hit the smoothing, brevity and zero-precision branches.
    corpora = [pairs(2, 100 + seed) for seed in range(40)] + [
        (["the cat"], ["the cat sat here"]), ([""], ["a b"]), (["a"], ["a"]), (["a b c d e"], ["x y z"]),
        (["x y z w", "a"], ["x y z w", "b c"]), (["&amp; ..."], ["& ..."]),
    ]
    for preds, refs in corpora:
        expected = sacrebleu.corpus_bleu(preds, [refs], lowercase=True).score
        assert corpus_bleu(preds, refs) == pytest.approx(expected, rel=1e-6, abs=1e-12), (preds, refs)


# --- Porter stemmer and ROUGE-L -------------------------------------------------------------------

# (word, stem) from Porter's paper and NLTK's extensions.
STEMS = [
    ("caresses", "caress"), ("ponies", "poni"), ("ties", "tie"), ("cats", "cat"), ("agreed", "agre"),
    ("feed", "feed"), ("plastered", "plaster"), ("motoring", "motor"), ("hopping", "hop"),
    ("falling", "fall"), ("filing", "file"), ("happy", "happi"), ("enjoy", "enjoy"),
    ("relational", "relat"), ("conditional", "condit"), ("generalizations", "gener"),
    ("oscillators", "oscil"), ("happiness", "happi"), ("controlling", "control"), ("roll", "roll"),
    ("dying", "die"), ("skies", "sky"), ("news", "news"), ("cried", "cri"), ("died", "die"),
    ("analogousli", "analog"), ("rationalli", "ration"),
]


def test_porter_stem_by_hand():
    for word, stem in STEMS:
        assert porter_stem(word) == stem, word


def stem_words(seed=0, n=20000):
    """Real-ish words and random stems + chains of Porter suffixes: every rule and condition."""
    suffixes = (
        "s es ies ied sses ss ed eed ing ings at ate bl ble iz ize y ly alli ational tional enci anci izer bli "
        "abli entli eli ousli ization ation ator alism iveness fulness ousness aliti iviti biliti fulli logi "
        "icate ative alize iciti ical ful ness al er ic able ible ant ement ment ent ion sion tion ou ism iti "
        "ous ive e ll"
    ).split()
    rng = random.Random(seed)
    words = {w.lower() for s in WORDS for w in re.findall(r"[A-Za-z0-9]+", s)} | {w for w, _ in STEMS}
    for _ in range(n):
        stem = "".join(rng.choices("bcdfghjklmnpqrstvwxyzaeiouyy0", k=rng.randint(0, 7)))
        words.add(stem + "".join(rng.choices(suffixes, k=rng.randint(1, 3))))
    return sorted(words)


def test_porter_stem_matches_nltk():
    porter = pytest.importorskip("nltk.stem.porter")
    nltk_stemmer = porter.PorterStemmer()  # NLTK_EXTENSIONS: what rouge-score builds
    mismatches = [w for w in stem_words() if porter_stem(w) != nltk_stemmer.stem(w)]
    assert not mismatches, mismatches[:20]


def test_rouge_l_by_hand():
    # pred tokens [the, cat, sat, on, the, mat], ref [the, cat, is, on, the, mat]:
    # LCS "the cat on the mat" = 5, P = R = 5/6, F = 5/6.
    assert rouge_l("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(5 / 6)
    # Stemming: "Running dogs" -> [run, dog] matches "the dog runs" -> [the, dog, run] in order only
    # on one token: LCS 1, P = 1/2, R = 1/3, F = 2 * (1/6) / (5/6) = 0.4.
    assert rouge_l("Running dogs", "the dog runs") == pytest.approx(0.4)
    # Tokens of 3 characters or fewer are not stemmed: "ran" != "run".
    assert rouge_tokenize("ran runs, don't!") == ["ran", "run", "don", "t"]
    assert rouge_l("", "anything") == 0.0 and rouge_l("!!", "?") == 0.0
    assert rouge_l("dog", ["cat", "the dog"]) == pytest.approx(2 / 3)  # max over refs: P = 1, R = 1/2


def test_rouge_l_matches_rouge_score():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    preds, refs = pairs(300, 3)
    for pred, ref in zip(preds, refs):
        assert rouge_l(pred, ref) == pytest.approx(scorer.score(ref, pred)["rougeL"].fmeasure, rel=1e-9, abs=1e-12)
    _, refs2 = pairs(300, 4)
    for pred, ref, ref2 in zip(preds[:100], refs, refs2):
        expected = scorer.score_multi([ref, ref2], pred)["rougeL"].fmeasure
        assert rouge_l(pred, [ref, ref2]) == pytest.approx(expected, rel=1e-9, abs=1e-12)


# --- Aggregation ----------------------------------------------------------------------------------


def test_score_aggregates_in_percent():
    preds, answers = ["Paris", "the dog", "x"], ["paris", ["a dog", "cat"], "y"]
    assert score("em", preds, answers) == pytest.approx(100 * 2 / 3)
    assert score("f1", preds, answers) == pytest.approx(100 * 2 / 3)
    assert score("rougeL", preds, answers) == pytest.approx(100 * (1 + 1 / 2 + 0) / 3)  # [the, dog] vs [a, dog]
    assert score("bleu", ["a b c d"], ["a b c d"]) == pytest.approx(100.0)
    assert {"em", "f1", "rougeL", "bleu"} <= set(metrics.METRICS)
    with pytest.raises(ValueError, match="unknown metric"):
        score("meteor", preds, answers)
    with pytest.raises(ValueError):
        score("em", preds, answers[:2])

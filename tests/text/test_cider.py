"""Tests for captioning.text.cider: CIDEr-D against pycocoevalcap's `Cider` and against a
plain-Python transcription of coco-caption's scorer with document frequencies from a
separate training corpus."""

from collections import defaultdict

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from captioning.text.cider import CiderD, exact_vocabulary

WORDS = [f"w{i}" for i in range(12)]


def random_caption(rng, shortest=0, longest=12):
    # A small vocabulary, so that captions share n-grams and repeat words.
    return " ".join(rng.choice(WORDS, rng.integers(shortest, longest + 1)))


def random_references(rng, images):
    return [[random_caption(rng, 1) for _ in range(rng.integers(1, 7))] for _ in range(images)]


def coco_cider(candidates, references):
    """pycocoevalcap's per-image CIDEr-D (its df from `references`)."""
    gts = {i: refs for i, refs in enumerate(references)}
    res = {i: [caption] for i, caption in enumerate(candidates)}
    return Cider().compute_score(gts, res)[1]


def precook(words, n=4):
    counts = defaultdict(int)
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i:i + k])] += 1
    return counts


def plain_cider(candidates, references, corpus, n=4, sigma=6.0):
    """coco-caption's CiderScorer, line by line, with df and log(documents) from `corpus`."""
    document_frequency = defaultdict(float)
    for refs in corpus:
        for ngram in {g for ref in refs for g in precook(ref.split(), n)}:
            document_frequency[ngram] += 1
    ref_len = np.log(float(len(corpus)))

    def counts2vec(counts):
        vec = [defaultdict(float) for _ in range(n)]
        norm, length = [0.0] * n, 0
        for ngram, term_freq in counts.items():
            df = np.log(max(1.0, document_frequency[ngram]))
            order = len(ngram) - 1
            vec[order][ngram] = float(term_freq) * (ref_len - df)
            norm[order] += pow(vec[order][ngram], 2)
            if order == 1:
                length += term_freq
        return vec, [np.sqrt(x) for x in norm], length

    def sim(vec_hyp, vec_ref, norm_hyp, norm_ref, length_hyp, length_ref):
        delta = float(length_hyp - length_ref)
        val = np.zeros(n)
        for order in range(n):
            for ngram in vec_hyp[order]:
                val[order] += (min(vec_hyp[order][ngram], vec_ref[order][ngram])
                               * vec_ref[order][ngram])
            if norm_hyp[order] != 0 and norm_ref[order] != 0:
                val[order] /= norm_hyp[order] * norm_ref[order]
            val[order] *= np.e ** (-(delta ** 2) / (2 * sigma ** 2))
        return val

    scores = []
    for candidate, refs in zip(candidates, references):
        vec, norm, length = counts2vec(precook(candidate.split(), n))
        score = np.zeros(n)
        for ref in refs:
            vec_ref, norm_ref, length_ref = counts2vec(precook(ref.split(), n))
            score += sim(vec, vec_ref, norm, norm_ref, length, length_ref)
        scores.append(np.mean(score) / len(refs) * 10.0)
    return np.array(scores)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_pycocoevalcap_with_df_from_the_scored_corpus(seed):
    rng = np.random.default_rng(seed)
    references = random_references(rng, 40)
    candidates = [random_caption(rng) for _ in references]
    candidates[0] = ""  # an empty caption scores 0
    candidates[1] = references[1][0]  # an exact match scores high
    expected = coco_cider(candidates, references)

    scores = CiderD(references).score(candidates)

    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
    assert scores[0] == 0 and scores[1] > np.median(scores)
    assert abs(scores.mean() - Cider().compute_score(
        dict(enumerate(references)), {i: [c] for i, c in enumerate(candidates)})[0]) < 1e-6


def test_equals_coco_caption_code_with_df_from_a_training_corpus():
    rng = np.random.default_rng(3)
    training = random_references(rng, 60)
    test_references = random_references(rng, 25)
    candidates = [random_caption(rng) for _ in test_references]
    candidates[2] = "w0 w0 w0 w0 w1 w1"  # repeats: clipped by the references' counts
    test_references[2] = ["w0 w0 w1", "w0 w1 w1 w1"]
    expected = plain_cider(candidates, test_references, training)

    scorer = CiderD(training)
    scores = scorer.score(candidates, references=test_references)

    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
    # The df are the training corpus' here, not the scored references': the scores differ.
    assert np.abs(scores - coco_cider(candidates, test_references)).max() > 1e-3


def test_several_candidates_per_image_against_the_corpus():
    rng = np.random.default_rng(4)
    corpus = random_references(rng, 30)
    images = rng.integers(0, 30, 50)
    candidates = [random_caption(rng) for _ in images]
    expected = plain_cider(candidates, [corpus[i] for i in images], corpus)

    scorer = CiderD(corpus)

    np.testing.assert_allclose(scorer.score(candidates, images), expected, rtol=0, atol=1e-6)
    prepared = scorer.references([corpus[i] for i in (5, 7)])
    np.testing.assert_allclose(scorer.score(candidates[:2], [1, 0], prepared),
                               plain_cider(candidates[:2], [corpus[7], corpus[5]], corpus),
                               rtol=0, atol=1e-6)


def id_captions(captions, start=None, end=None, width=16):
    """Word captions as a padded id matrix (word wK -> id K + 4), with markers."""
    matrix = np.zeros((len(captions), width), np.int64)
    for row, caption in zip(matrix, captions):
        ids = [int(word[1:]) + 4 for word in caption.split()]
        ids = ([start] if start is not None else []) + ids + ([end] if end is not None else [])
        row[:len(ids)] = ids[:width]
    return matrix


def test_id_captions_with_markers_score_as_their_words():
    rng = np.random.default_rng(5)
    corpus = random_references(rng, 20)
    candidates = [random_caption(rng) for _ in corpus]
    expected = CiderD(corpus).score(candidates)
    corpus_ids = [[[int(w[1:]) + 4 for w in ref.split()] for ref in refs] for refs in corpus]
    # Model output: a start token, the words, the end token, then anything after it.
    output = id_captions(candidates, start=2, end=3)
    output[:, -1] = 7

    for vocab_size in (None, 50, exact_vocabulary() + 1):
        scorer = CiderD(corpus_ids, start_id=2, end_id=3, pad_id=0, vocab_size=vocab_size)
        assert scorer.exact == (vocab_size != exact_vocabulary() + 1)
        np.testing.assert_allclose(scorer.score(output), expected, rtol=0, atol=1e-9)


def test_rejects_mixed_inputs_and_bad_indices():
    scorer = CiderD([["a b c"], ["b c d"]])
    with pytest.raises(ValueError, match="as words"):
        scorer.score(np.array([[1, 2, 3]]), [0])
    with pytest.raises(ValueError, match="0..1"):
        scorer.score(["a b"], [2])
    with pytest.raises(ValueError, match="one image index per candidate"):
        scorer.score(["a b", "b c"], [0])
    with pytest.raises(ValueError, match="non-empty list"):
        CiderD([["a"], []])
    with pytest.raises(ValueError, match="vocab_size"):
        CiderD([[[1, 2]]]).score(np.array([[exact_vocabulary() + 3]]), [0])

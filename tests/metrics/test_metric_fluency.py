import math

import pytest

from kebench.metrics.fluency import mean_ngram_entropy, ngram_entropy, ngram_entropy_bits, word_tokens


def test_word_tokens_split_like_treebank():
    assert word_tokens("I don't know, it's John's car.") == [
        "I", "do", "n't", "know", ",", "it", "'s", "John", "'s", "car", ".",
    ]


def test_entropy_of_known_string():
    # tokens a b a b: bigrams {ab: 2, ba: 1}, trigrams {aba: 1, bab: 1}
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert ngram_entropy_bits(["a", "b", "a", "b"], 2) == pytest.approx(h2)
    assert ngram_entropy_bits(["a", "b", "a", "b"], 3) == pytest.approx(1.0)
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)


def test_distinct_words_give_log_of_ngram_count():
    text = "one two three four five six seven eight"
    assert ngram_entropy(text) == pytest.approx((2 / 3 * math.log2(7) + 4 / 3 * math.log2(6)) / 2)


def test_repetition_has_zero_entropy_and_short_text_is_zero():
    assert ngram_entropy("the the the the the") == 0.0
    assert ngram_entropy("Paris") == 0.0
    assert ngram_entropy("") == 0.0


def test_mean_over_texts():
    assert mean_ngram_entropy(["a b a b", "the the the"]) == pytest.approx(ngram_entropy("a b a b") / 2)
    with pytest.raises(ValueError):
        mean_ngram_entropy([])

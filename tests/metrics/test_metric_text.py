import pytest

from kebench.errors import DataError
from kebench.metrics.text import (
    answer_text,
    contains_match,
    exact_match,
    first_line,
    normalise_answer,
    same_answer,
    span_match,
    squad_normalise,
)


@pytest.mark.parametrize(
    "raw, want",
    [
        ("The Eiffel Tower.", "eiffel tower"),
        ("Washington, D.C.", "washington dc"),
        ("  New   York\tCity ", "new york city"),
        ("an apple a day", "apple day"),
        ("Theatre Anaheim", "theatre anaheim"),  # articles only as whole words
        ("Rock 'n' roll!", "rock n roll"),
        ("", ""),
    ],
)
def test_squad_normalise(raw, want):
    assert squad_normalise(raw) == want


def test_answer_text_is_the_normalised_first_line():
    assert answer_text("\n The Beatles.\nThey were") == "beatles"


@pytest.mark.parametrize(
    "raw, want",
    [
        (" Paris.\nThe capital of France.", "paris"),
        ("\n\n  New   York\tCity. \nmore", "new york city"),
        ("Washington, D.C.", "washington, d.c"),
        ("", ""),
    ],
)
def test_normalise_answer_meg_rule(raw, want):
    assert normalise_answer(raw) == want


def test_first_line_skips_leading_newlines_only():
    assert first_line("\n Paris\nRome") == "Paris"
    assert first_line("Paris is\n\nRome") == "Paris is"


def test_exact_match_is_squad_normalised_first_line_and_aliases():
    assert exact_match(" Paris.\nIt is also", "paris")
    assert not exact_match(" Paris, France", "Paris")
    assert exact_match(" the UK", ["United Kingdom", "UK"])
    assert exact_match("Washington DC", "Washington, D.C.")
    assert not exact_match("The answer is: Paris", "Paris")


def test_span_match_needs_whole_consecutive_tokens_of_the_first_line():
    assert span_match("The answer is: Paris.", "Paris")
    assert span_match(" It is Paris, France.", "paris france")
    assert span_match("Born in the United  States of America", "United States")
    assert not span_match(" Parisian food", "Paris")
    assert not span_match(" Paris is in France", "Paris France")  # not consecutive
    assert not span_match(" first line\nParis", "Paris")
    assert span_match("Volvo B12M bus", ["Scania", "Volvo B12M"])
    assert span_match("It is the A", "A")  # an answer SQuAD's rule empties is kept as written, lower-cased
    assert not span_match("Nothing here", "A")


def test_contains_match_mquake_rule_needs_whole_words():
    assert contains_match(" It is Paris, France.", "Paris")
    assert contains_match(" born in the United  States of America", "the united states")
    assert not contains_match(" Parisian food", "Paris")
    assert not contains_match(" first line\nParis", "Paris")
    assert contains_match(" U.S.A. is big", "U.S.A")  # regex characters are escaped
    assert not contains_match(" USA is big", "U.S.A")


def test_empty_answers_are_rejected():
    with pytest.raises(DataError):
        exact_match("Paris", "")
    with pytest.raises(DataError):
        span_match("Paris", [" . "])
    with pytest.raises(DataError):
        span_match("Paris", [])
    with pytest.raises(DataError):
        contains_match("Paris", [])


def test_same_answer_compares_normalised_answer_lines():
    assert same_answer(" Paris.\nblah", "paris")
    assert same_answer("The Louvre", "louvre\nsomething else")
    assert not same_answer(" Paris", " Rome")
    assert not same_answer("Paris is big", "Paris")

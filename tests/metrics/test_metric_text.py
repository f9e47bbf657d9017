import pytest

from kebench.errors import DataError
from kebench.metrics.text import contains_match, exact_match, first_line, normalise_answer, prefix_match, same_answer


@pytest.mark.parametrize(
    "raw, want",
    [
        (" Paris.\nThe capital of France.", "paris"),
        ("\n\n  New   York\tCity. \nmore", "new york city"),
        ("Washington, D.C.", "washington, d.c"),
        ("", ""),
    ],
)
def test_normalise_answer(raw, want):
    assert normalise_answer(raw) == want


def test_first_line_skips_leading_newlines_only():
    assert first_line("\n Paris\nRome") == "Paris"
    assert first_line("Paris is\n\nRome") == "Paris is"


def test_exact_match_uses_first_line_and_aliases():
    assert exact_match(" Paris.\nIt is also", "paris")
    assert not exact_match(" Paris, France", "Paris")
    assert exact_match(" the UK", ["United Kingdom", "The UK"])


def test_prefix_match_is_lenient_startswith():
    assert prefix_match(" Paris, France.", "Paris")
    assert prefix_match(" Parisian", "Paris")  # no word boundary, as in MEMIT-style checks
    assert not prefix_match(" It is Paris", "Paris")
    assert not prefix_match("\nfoo\nParis", "Paris")


def test_contains_match_needs_whole_words():
    assert contains_match(" It is Paris, France.", "Paris")
    assert contains_match(" born in the United  States of America", "the united states")
    assert not contains_match(" Parisian food", "Paris")
    assert not contains_match(" first line\nParis", "Paris")
    assert contains_match(" U.S.A. is big", "U.S.A")  # regex characters are escaped
    assert not contains_match(" USA is big", "U.S.A")


def test_empty_answers_raise():
    with pytest.raises(DataError):
        exact_match("Paris", "")
    with pytest.raises(DataError):
        prefix_match("Paris", [" . "])
    with pytest.raises(DataError):
        contains_match("Paris", [])


def test_same_answer():
    assert same_answer(" Paris.\nblah", "paris")
    assert not same_answer(" Paris", " Rome")

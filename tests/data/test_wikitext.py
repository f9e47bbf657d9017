"""The shipped WikiText corpus for covariance statistics."""

from __future__ import annotations

from kebench.data import wikitext_paragraphs


def test_clean_part_has_no_unk_and_no_headings():
    paragraphs = wikitext_paragraphs()
    assert len(paragraphs) > 2000
    assert not any("<unk>" in p for p in paragraphs)
    assert not any(p.startswith("= ") and p.endswith(" =") for p in paragraphs)
    assert paragraphs[0].startswith("Robert Boulter is an English film")


def test_full_file_adds_the_unk_valid_split():
    full = wikitext_paragraphs(unk_free=False, headings=True)
    assert any("<unk>" in p for p in full)
    assert "= Homarus gammarus =" in full
    assert len(full) > len(wikitext_paragraphs(unk_free=False)) > len(wikitext_paragraphs())

"""Plain text for second-moment (covariance) statistics of MLP keys, as MEMIT/AlphaEdit need.

The shipped WikiText file starts with the raw WikiText-2 test split (lines
1-2947, no `<unk>`) and continues with the tokenized valid split, where rare
words are `<unk>`; statistics should normally use the clean part only.
"""

from __future__ import annotations

from kebench.data.shipped import open_text, shipped_path

WIKITEXT_FILE = "wikitext_dedup.txt"
WIKITEXT_CLEAN_LINES = 2947  # lines 1..2947 are the raw test split, free of <unk>


def wikitext_paragraphs(unk_free: bool = True, headings: bool = False) -> list[str]:
    """Paragraphs (one per line) of the shipped WikiText, in file order.

    unk_free: only the raw test split (lines 1-2947); False adds the <unk>-bearing valid split.
    headings: keep "= Title =" heading lines (short, unlike the text statistics are for).
    """
    with open_text(shipped_path(WIKITEXT_FILE)) as f:
        lines = f.read().split("\n")
    if unk_free:
        lines = lines[:WIKITEXT_CLEAN_LINES]
    return [
        line for line in (raw.strip() for raw in lines)
        if line and (headings or not (line.startswith("=") and line.endswith("=")))
    ]

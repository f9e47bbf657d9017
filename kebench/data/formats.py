"""Record layouts: detection from a record's keys, and dispatch to the parser of each layout.

Several benchmark files exist in more than one layout (CounterFact: EasyEdit vs
ROME; zsRE: MEND vs KnowEdit); a file's layout is told from its first record's
keys, or named explicitly when detection would guess wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kebench.data import counterfact, mquake, zsre
from kebench.data.case import EditCase
from kebench.data.fields import Fields
from kebench.data.prompts import check_template
from kebench.errors import DataError
from kebench.registry import Registry


@dataclass(frozen=True)
class Format:
    """A record layout: the keys that identify it and the parser for one record.

    `parse(fields, suite, template)` returns one EditCase; `target` is the dotted
    path of the new target, so records with an empty one can be dropped on request.
    """

    name: str
    keys: frozenset[str]
    expected: str
    parse: Callable[[Fields, str, str], EditCase]
    target: str | None = None


FORMATS: Registry[Format] = Registry("data format", entry_point_group="kebench.data_formats")


def register_format(fmt: Format) -> Format:
    FORMATS.register(fmt.name, fmt)
    return fmt


register_format(Format(
    "counterfact-easyedit",
    frozenset({"prompt", "subject", "target_new", "rephrase_prompt", "locality_prompt"}),
    counterfact.EASYEDIT_EXPECTED, counterfact.parse_easyedit, "target_new",
))
register_format(Format(
    "counterfact-rome",
    frozenset({"requested_rewrite", "paraphrase_prompts", "neighborhood_prompts"}),
    counterfact.ROME_EXPECTED, counterfact.parse_rome, "requested_rewrite.target_new.str",
))
register_format(Format("zsre-mend", frozenset({"src", "alt", "subject"}), zsre.MEND_EXPECTED, zsre.parse_mend, "alt"))
register_format(Format(
    "knowedit", frozenset({"prompt", "subject", "target_new", "locality"}),
    zsre.KNOWEDIT_EXPECTED, zsre.parse_knowedit, "target_new",
))
register_format(Format(
    "mquake", frozenset({"requested_rewrite", "questions", "new_answer"}), mquake.EXPECTED, mquake.parse_mquake,
))


def detect_format(records: Sequence[dict[str, Any]], source: str = "records") -> str:
    """Name of the one layout whose identifying keys the first record has (later records are checked when parsed)."""
    if not records:
        raise DataError(f"{source}: holds no records")
    keys = set(records[0])
    matches = [FORMATS.get(n) for n in FORMATS.names() if FORMATS.get(n).keys <= keys]
    if not matches:
        known = "; ".join(f"{n} ({', '.join(sorted(FORMATS.get(n).keys))})" for n in FORMATS.names())
        raise DataError(
            f"{source}: cannot tell the format of record 0 (keys: {', '.join(sorted(keys))}); "
            f"known formats and their keys: {known}; pass the format explicitly"
        )
    if len(matches) > 1:
        names = ", ".join(m.name for m in matches)
        raise DataError(f"{source}: record 0 fits several formats ({names}); pass the format explicitly")
    return matches[0].name


def parse_records(
    records: Sequence[dict[str, Any]],
    fmt: str | None = None,
    *,
    suite: str,
    source: str = "records",
    template: str = zsre.ZSRE_TEMPLATE,
    drop_empty_targets: bool = False,
) -> list[EditCase]:
    """Parse raw records in layout `fmt` (detected when None) into cases labelled `suite`.

    drop_empty_targets: skip records whose new target is an empty string (known
    defects of some shipped files) instead of raising DataError.
    """
    layout = FORMATS.get(fmt or detect_format(records, source))
    check_template(template)
    cases = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"{source}: record {i} is a {type(record).__name__}, expected a JSON object")
        f = Fields(record, i, source, layout.expected)
        if drop_empty_targets and layout.target and _is_blank(f, layout.target):
            continue
        cases.append(layout.parse(f, suite, template))
    return cases


def _is_blank(f: Fields, path: str) -> bool:
    return f.has(path) and isinstance(f.raw(path), str) and not f.raw(path).strip()


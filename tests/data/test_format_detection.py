"""Layout detection from record keys, explicit overrides, and suite/layout mismatches."""

from __future__ import annotations

import pytest

from kebench.data import FORMATS, detect_format, parse_records
from kebench.errors import ConfigError, DataError
from kebench.suites import load_cases


@pytest.mark.parametrize("fixture, fmt", [
    ("cf_easyedit", "counterfact-easyedit"),
    ("cf_rome", "counterfact-rome"),
    ("zsre_mend", "zsre-mend"),
    ("knowedit", "knowedit"),
    ("mquake_record", "mquake"),
])
def test_each_layout_is_detected(request, fixture, fmt):
    assert detect_format([request.getfixturevalue(fixture)]) == fmt


def test_unknown_layout_lists_known_ones():
    with pytest.raises(DataError) as err:
        detect_format([{"question": "q", "answer": "a"}], source="odd.json")
    message = str(err.value)
    assert message.startswith("odd.json: cannot tell the format of record 0 (keys: answer, question)")
    assert all(name in message for name in FORMATS.names())


def test_ambiguous_record_asks_for_an_explicit_format(cf_easyedit, knowedit):
    merged = {**knowedit, **cf_easyedit}
    with pytest.raises(DataError, match="fits several formats"):
        detect_format([merged])
    (case,) = parse_records([merged], "counterfact-easyedit", suite="counterfact")
    assert case.request.prompt == "The mother tongue of {} is"


def test_explicit_format_overrides_detection_and_reports_against_it(cf_easyedit):
    with pytest.raises(DataError, match=r"record 0 lacks 'src'; expected zsRE MEND format"):
        parse_records([cf_easyedit], "zsre-mend", suite="zsre", source="x.json")


def test_unknown_format_name_is_a_config_error(cf_easyedit):
    with pytest.raises(ConfigError, match="did you mean 'knowedit'"):
        parse_records([cf_easyedit], "knowedt", suite="zsre")


def test_file_in_another_suites_layout_names_the_right_suite(write_json, cf_easyedit):
    path = write_json("cf.json", [cf_easyedit])
    with pytest.raises(DataError, match=r"cf\.json is in counterfact-easyedit format.*suite 'counterfact'"):
        load_cases("zsre", path)


def test_detection_uses_the_explicit_fmt_through_load_cases(write_json, zsre_mend):
    path = write_json("z.json", [zsre_mend])
    with pytest.raises(DataError, match="lacks 'prompt'; expected KnowEdit"):
        load_cases("zsre", path, fmt="knowedit")

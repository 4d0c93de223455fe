"""apps.common.parsing: the checks that keep the interpreter's own limits (recursion, the int digit limit,
isdigit()'s idea of a digit) from becoming 500s."""

import json

import pytest

from apps.common.parsing import MAX_ID, ParseError, json_depth, parse_id, parse_int, parse_json


@pytest.mark.parametrize(("text", "depth"), [
    ("1", 0), ("[]", 1), ('{"a": [1, {"b": []}]}', 4), ('["[[[[", "]]"]', 1), ('["\\"[[["]', 1),
    ("[" * 5000, 5000),
])
def test_json_depth_counts_brackets_outside_strings(text, depth):
    assert json_depth(text) == depth


def test_parse_json_reads_what_json_reads():
    text = '{"move_pct": 1.5, "n": -3, "on": true, "s": "[[{", "l": [1, [2, [3]]]}'
    assert parse_json(text) == json.loads(text)


@pytest.mark.parametrize(("text", "words"), [
    ("[" * 2000 + "]" * 2000, "too deeply nested"),
    ('{"a": ' + "[" * 33 + "]" * 33 + "}", "too deeply nested"),
    ('{"a": ' + "9" * 4301 + "}", "more than 30 digits"),
    ('{"a": ' + "9" * 31 + "}", "more than 30 digits"),
    ('{"a": 1e999}', "too large"),
    ('{"a": NaN}', "NaN is not a number JSON allows"),
    ('[-Infinity]', "-Infinity is not a number JSON allows"),
    ('{"a": ', "not valid JSON"),
    ("x" * 100_001, "too long"),
])
def test_parse_json_refuses_with_a_sentence(text, words):
    with pytest.raises(ParseError, match=words.replace("(", r"\(")):
        parse_json(text)


def test_parse_json_keeps_30_digit_integers_and_32_levels():
    assert parse_json("9" * 30) == int("9" * 30)
    assert json_depth(json.dumps(parse_json("[" * 32 + "]" * 32))) == 32


@pytest.mark.parametrize(("text", "value"), [("12", 12), (" -3 ", -3), ("+7", 7), ("9" * 15, int("9" * 15))])
def test_parse_int_reads_ascii_whole_numbers(text, value):
    assert parse_int(text) == value


@pytest.mark.parametrize(("text", "words"), [
    ("²", "not a whole number"), ("١٢", "not a whole number"), ("１２", "not a whole number"),
    ("1.5", "not a whole number"), ("1_000", "not a whole number"), ("", "not a whole number"),
    ("9" * 16, "too large"), ("9" * 400, "too large"),
])
def test_parse_int_refuses_other_digits_and_huge_numbers(text, words):
    with pytest.raises(ParseError, match=words):
        parse_int(text)


@pytest.mark.parametrize(("text", "value"), [
    ("1", 1), ("42", 42), (str(MAX_ID), MAX_ID), ("0", None), (str(MAX_ID + 1), None), ("9" * 400, None),
    ("²", None), ("١", None), ("-1", None), ("", None), (None, None), ("1 2", None),
])
def test_parse_id(text, value):
    assert parse_id(text) == value

"""Property: no request to any URL of the desk gets a 500, logs a traceback, or leaves an invalid row.

Generated, not written per endpoint: the routes come from Django's resolver (tests/hardening/routes.py), the
fields each one reads from the forms of the rendered pages, the Form classes its view uses and the request
keys its code reads (tests/hardening/catalogue.py). A URL added to any urls.py is fuzzed on the next run.

Two passes per route and method, both as the operator unless drawn otherwise:
- the floor (FLOOR, deterministic): the page's own valid form with every field of one kind (date, number,
  JSON, digits, any) set to one trap at a time, the other fields left valid so no error elsewhere hides the
  trap; then ids no row has (0, 2^63, 10^25) in each numeric path argument. ~20 requests; this pass alone
  finds every HTTP cause of issue 12 on the code before its fixes;
- hypothesis (derandomized: a fixed seed per test, so CI is deterministic): a role (operator, viewer,
  anonymous), path arguments, and a query string or a form body that starts half the time from the page's
  form and changes up to four fields, the view's hand-parsed keys most often, to values of every kind of
  NASTY, the field's valid values, or anything hypothesis makes; multipart, urlencoded or a junk body;
  Accept: JSON or HTML.
Each request runs in a savepoint rolled back afterwards, against the world of tests/hardening/world.py.
Failing: a status >= 500, an exception while streaming the body, a log record with a traceback or at ERROR
(PermissionDenied and Http404, Django's own 403/404, excepted), or a written row that
tests/hardening/invariants.py refuses.

Budget: HFT_FUZZ_EXAMPLES hypothesis examples per route and method (default 6); the whole module runs in
~30 s of CPU. Search harder locally: `HFT_FUZZ_EXAMPLES=200 pytest tests/hardening/test_fuzz_http.py`.
"""

import json
import os
import re
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from tests.hardening.catalogue import Inputs, rollback_after, sample_args
from tests.hardening.invariants import Watch
from tests.hardening.routes import Route, all_routes

pytestmark = pytest.mark.django_db  # the world fixture holds the transaction; the mark sets the test DB up

EXAMPLES = int(os.environ.get("HFT_FUZZ_EXAMPLES", "6"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, print_blob=False,
                phases=[Phase.explicit, Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))

# Not fuzzed, and why. Django's admin (~180 patterns) is staff only, and no desk role is staff: the
# authorisation matrix checks that no anonymous user, viewer or operator gets past its login.
SKIP_NAMESPACES = {"admin"}
ROUTES = [r for r in all_routes() if r.namespace not in SKIP_NAMESPACES]

# The inputs that broke the desk before (issue 12) and their relatives, by kind, so that every kind comes up
# often whatever the list lengths: digits of other scripts (isdigit() yes, int() no), numbers beyond every limit,
# dates at the calendar's ends, JSON past the recursion and digit limits, text a parser does not expect.
NASTY: dict[str, list[str]] = {
    "other digits": ["²", "١٢", "１２", "৩", "𝟙", "-²", "1²", "²,1", "1,²", "1:²", "²:1", "db:²", "0:²"],
    "big numbers": ["9" * 400, "-" + "9" * 30, "9" * 19, str(2**63), str(2**63 - 1), "99999999999999999999999",
                    "1e999", "-1e999", "1e-999", "nan", "NaN", "inf", "-Infinity", "0", "-1", "-0", "00", "1_000",
                    "0x10", "1.5", "1,5", "+1", " 7 ", "0:" + "9" * 25, "db:" + "9" * 30, "db:0"],
    "dates": ["9999-12-31", "0001-01-01", "10000-01-01", "2025-02-30", "1969-12-31", "0000-00-00",
              "9999-12-31T23:59", "9999-12-31 23:59", "0001-01-01 00:00", "2025-06-21", "2025-06-22",
              "2025-06-21T00:00", "2025-06-22 12:00", "2025-06-24", "1970-01-01"],
    "json": ["[" * 2000, "{" * 1000, '{"a": ' * 300, "[" * 40 + "]" * 40, "{}", "[]", "null", "true", '"x"',
             '{"spike_threshold_pct": 1e999}', '{"spike_threshold_pct": "x"}', '{"spike_threshold_pct": -1}',
             '{"a": ' + "9" * 4301 + "}", '{"spike_threshold_pct": NaN}', '{"__proto__": {}}', "[1, 2]"],
    "text": ["", " ", "\x00", "a\x00b", "\r\n", "<script>alert(1)</script>", "' OR 1=1 --", "../../etc/passwd",
             "%00", "x" * 5000, "é" * 300, "env:x", "portfolio", "on", "off", "true", "false", "long", "short",
             "both", "stop", "win", "day", "week", "desk", "spike_fader", "textbook", "risk", "stake",
             "equity_pct", "tpe", "grid", "rolling", "anchored", "1,2", "1,2,3,4,5", "1:1"],
}
# The floor under the random examples, the same for every route: the page's own valid form with every field
# of one kind set to one trap at a time (the other fields stay valid, so no error elsewhere hides the trap).
# A field's kind comes from its form field, else from its default value; "digits" replaces each ASCII digit run
# of the default ("db:1" -> "db:²") and fills the hand-parsed keys that have none (?before=, ?after=).
FLOOR: dict[str, list[str]] = {
    "digits": ["²", "9" * 400, "0"],
    "date": ["9999-12-31", "0001-01-01", "9999-12-31 23:59"],
    "number": ["9" * 400, "1e999", "nan", "-1", "²"],
    "json": ["[" * 2000, '{"a": ' + "9" * 4301 + "}", '{"a": NaN}', '{"a": 1e999}'],
    "any": ["", "a\x00b", "x" * 5000],
}
PATH_IDS = ["0", str(2**63), "9" * 25]  # ids no row has, one past SQLite's INTEGER, far past it
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DIGITS = re.compile(r"[0-9]+")

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
).map(lambda v: json.dumps(v))  # json.dumps writes NaN and Infinity: the parsers must refuse them


def _values(inputs: Inputs, name: str) -> st.SearchStrategy[str]:
    known = [v for v in (inputs.body.get(name) or []) + (inputs.query.get(name) or []) + inputs.choices.get(name, [])
             if v]
    parts = [st.sampled_from(values) for values in NASTY.values()]
    parts += [st.text(max_size=24), st.integers(-(2**70), 2**70).map(str), st.floats().map(repr), JSON_VALUES]
    if known:
        parts += [st.sampled_from(known)] * 3
    return st.one_of(parts)


def _draw_fields(data, inputs: Inputs, side: dict[str, list[str]], pool: list[str]) -> tuple[dict, str]:
    """A form body or query: half the time the page's own defaults (reasons filled in) with a few changes.
    Returns the fields and a short description for the failure report (the changes, not the whole form)."""
    fields: dict[str, list[str]] = {}
    start = "{}"
    if side and data.draw(st.booleans(), label="start from the page's form"):
        fields = {n: list(v) for n, v in side.items() if v}
        for n in side:
            if "reason" in n and not any(fields.get(n, [])):
                fields[n] = ["checked by the fuzzer"]
        start = "the page's form"
    names = sorted(side) or pool
    literal = sorted(inputs.literal)  # hand-parsed keys: where a parser of the view's own is
    changes = []
    for _ in range(data.draw(st.integers(0, 4), label="changes")):
        where = data.draw(st.integers(0, 9), label="which fields")
        pick = literal if literal and where < 4 else pool if where == 9 else names
        name = data.draw(st.sampled_from(pick), label="field")
        how = data.draw(st.sampled_from(["set", "set", "set", "drop", "repeat"]), label="how")
        if how == "drop":
            fields.pop(name, None)
            changes.append(f"-{name}")
        else:
            n = 1 if how == "set" else data.draw(st.integers(2, 3), label="repeats")
            fields[name] = [data.draw(_values(inputs, name), label=name) for _ in range(n)]
            changes.append(f"{name}={[v[:60] + ('…' if len(v) > 60 else '') for v in fields[name]]}")
    return fields, f"{start} + [{', '.join(changes)}]"


def _args(data, route: Route, world) -> dict[str, str]:
    args = {}
    for name, conv in route.converters:
        if conv == "int":
            ids = st.sampled_from(world.ids_for(route.key, name))
            args[name] = str(data.draw(st.one_of(ids, ids, ids, st.integers(0, 10**6),
                                                 st.sampled_from([0, 2**63 - 1, 2**63, 10**25])), label=name))
        elif conv == "path":
            args[name] = data.draw(st.one_of(
                st.sampled_from(["css/desk.css", "js/desk.js", "../hftweb/settings.py", "css/../../manage.py",
                                 "%2e%2e/settings.py", "x" * 300, "css/", "\x00", "admin/css/base.css"]),
                st.text(min_size=1, max_size=30)), label=name)
        else:
            args[name] = data.draw(st.text(min_size=1, max_size=20).filter(lambda s: "/" not in s), label=name)
    return args


def _kind(inputs: Inputs, name: str, default: str) -> str | None:
    if name in inputs.types and inputs.types[name] != "choice":
        return inputs.types[name]
    if _DATE.match(default):
        return "date"
    if default[:1] and default[0] in "{[":
        return "json"
    try:
        float(default)
        return "number"
    except ValueError:
        pass
    if (_DIGITS.search(default) or any(_DIGITS.search(c) for c in inputs.choices.get(name, []))
            or inputs.types.get(name) == "choice" or (name in inputs.literal and not default)):
        return "digits"
    return None


def _with_digits(inputs: Inputs, name: str, default: str) -> str:
    """The field's default, or else one of its other values, that has digits to replace ("" if none has)."""
    return next((v for v in [default, *inputs.choices.get(name, [])] if _DIGITS.search(v)), "")


def _floor(route: Route, inputs: Inputs, method: str, world) -> list[tuple[str, dict, dict, dict]]:
    """(label, path args, query, body) of the floor requests of one route and method."""
    side = inputs.query if method == "GET" else inputs.body
    base = {n: list(v) for n, v in side.items() if v}
    for n in side:
        if "reason" in n and not any(base.get(n, [])):
            base[n] = ["checked by the fuzzer"]
    names = sorted(set(side) | inputs.literal)
    kinds = {n: _kind(inputs, n, (base.get(n) or [""])[0]) for n in names}
    args = sample_args(route, world)
    out = []
    for kind, values in FLOOR.items():
        targets = names if kind == "any" else [n for n in names if kinds[n] == kind or
                                                (kind == "number" and kinds[n] == "digits")]
        for value in values if targets else []:
            fields = dict(base)
            for n in targets:
                default = _with_digits(inputs, n, (base.get(n) or [""])[0]) if kind == "digits" else ""
                fields[n] = [_DIGITS.sub(value, default) if default else value]
            label = f"{kind} fields {targets[:6]}{'…' if len(targets) > 6 else ''} = {value[:24]!r}"
            out.append((label, args, *((fields, {}) if method == "GET" else ({}, fields))))
    for name, conv in route.converters:
        for value in PATH_IDS if conv == "int" else []:
            out.append((f"path {name} = {value}", {**args, name: value}, {}, dict(base) if method == "POST" else {}))
    return out


def _body_text(response) -> str:
    """The response body; a streamed one is read here, so an exception raised while streaming fails the test."""
    if response.streaming:
        return b"".join(response.streaming_content).decode(errors="replace")
    return response.content.decode(errors="replace")


def _send(client, method: str, url: str, query: dict, body: dict, encoding: str, as_json: bool):
    headers = {"HTTP_ACCEPT": "application/json"} if as_json else {}
    if method == "GET":
        return client.get(url, query, **headers)
    if query:
        url += "?" + urlencode(query, doseq=True)
    if encoding == "urlencoded":
        return client.post(url, urlencode(body, doseq=True), content_type="application/x-www-form-urlencoded",
                           **headers)
    if encoding == "junk":
        return client.post(url, "\x00{[" * 50, content_type="application/json", **headers)
    return client.post(url, body, **headers)


# 500s this test finds in code another engineer is writing now (apps/research, issue 10), reported to them with
# the cases in test_found_by_fuzzing.py. strict: the run fails once a page is fixed, and the entry goes.
KNOWN: dict[tuple[str, str], str] = {}  # (route, method) -> why it may still 500 (a strict xfail); none today
CASES = [pytest.param(r.key, method, id=f"{r.key}-{method}",
                      marks=[pytest.mark.xfail(strict=True, reason=KNOWN[(r.key, method)])]
                      if (r.key, method) in KNOWN else [])
         for r in ROUTES for method in ("GET", "POST")]


@pytest.mark.parametrize(("key", "method"), CASES)
def test_no_request_gets_a_500_a_traceback_or_an_invalid_row(key, method, world, clients, catalogue, baseline,
                                                             tracebacks):
    routes, cat = catalogue
    route, inputs = routes[key], cat[key]
    pool = sorted({n for i in cat.values() for n in (*i.query, *i.body)} | {"page", "next", "x"})

    # A method the route refuses (405) for everyone is checked once, not fuzzed.
    with rollback_after():
        first = _send(clients.fresh("operator"), method, route.url(sample_args(route, world)), {}, {}, "multipart",
                      False)
        _body_text(first)
    if first.status_code == 405:
        assert not tracebacks.records, tracebacks.text()
        return

    # The floor (FLOOR, then PATH_IDS in each numeric path argument), before the random examples.
    failures = []
    for label, args, query, body in _floor(route, inputs, method, world):
        tracebacks.clear()
        with rollback_after():
            watch = Watch(baseline)
            response = _send(clients.fresh("operator"), method, route.url(args), query, body, "multipart", False)
            _body_text(response)
            bad_rows = watch.invalid_rows()
        if response.status_code >= 500 or tracebacks.records or bad_rows:
            failures.append(f"{label}: {response.status_code}\n" + tracebacks.text()[-1500:] + "\n".join(bad_rows))
    assert not failures, f"{method} /{route.pattern}:\n" + "\n\n".join(failures)

    @FUZZ
    @given(data=st.data())
    def example(data):
        role = data.draw(st.sampled_from(["operator", "operator", "operator", "viewer", "anonymous"]), label="role")
        args = _args(data, route, world)
        url = route.url(args)
        body, body_text = _draw_fields(data, inputs, inputs.body, pool) if method == "POST" else ({}, "")
        query, query_text = ({}, "")
        if method == "GET" or data.draw(st.integers(0, 4), label="query on a POST") == 0:
            query, query_text = _draw_fields(data, inputs, inputs.query, pool)
        encoding = data.draw(st.sampled_from(["multipart", "multipart", "urlencoded", "junk"]), label="encoding")
        as_json = data.draw(st.booleans(), label="Accept: application/json")
        note(f"{role} {method} {url} query: {query_text} body: {body_text} ({encoding}, json={as_json})")
        tracebacks.clear()
        with rollback_after():
            watch = Watch(baseline)
            response = _send(clients.fresh(role), method, url, query, body, encoding, as_json)
            _body_text(response)
            bad_rows = watch.invalid_rows()
        assert response.status_code < 500, f"{response.status_code}\n{tracebacks.text()}"
        assert not tracebacks.records, tracebacks.text()
        assert not bad_rows, "\n".join(bad_rows)

    example()

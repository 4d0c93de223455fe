"""The authorisation matrix: every URL of the resolver x {anonymous, viewer, operator} x {GET, POST, PUT, DELETE}
gets exactly what EXPECTED says, and a refused request writes nothing.

The URLs come from Django's resolver (tests/hardening/routes.py), never from a list here, and every one of them
must have a row in EXPECTED: a URL added to any urls.py without a row fails test_every_url_has_a_row, which
says what to add (and what the URL does today). The admin's ~180 patterns share one rule (staff only; no
desk role is staff) except its login and logout; a newly registered ModelAdmin needs no row.

Each request names objects that exist (tests/hardening/world.py) and a POST carries the form the page itself
would send, with a reason filled in, so a 403 is about the role and never about the input. Assertions:
- the outcome is the expected one: LOGIN (redirect to the desk's login), ADMIN_LOGIN, 403, 405, or OK (past
  every access check: any other status below 500, e.g. 200, a redirect after a write, a 400 for the input);
- a refused request (LOGIN, ADMIN_LOGIN, 403, 405) leaves every table as it was (sessions included);
- an anonymous user or a viewer writes nothing anywhere, whatever the status, except on the self-service
  rows (signing in and out, changing one's own password);
- nothing answers 500.
Every request runs in a savepoint rolled back afterwards.
"""

from dataclasses import dataclass

import pytest

from tests.hardening.authz import ADMIN_LOGIN, FORBIDDEN, LOGIN, NOT_ALLOWED, OK, outcome, send
from tests.hardening.catalogue import rollback_after, sample_args
from tests.hardening.invariants import Watch
from tests.hardening.routes import Route, all_routes

pytestmark = pytest.mark.django_db  # the world fixture holds the transaction; the mark sets the test DB up

ROLES = ("anonymous", "viewer", "operator")
METHODS = ("GET", "POST", "PUT", "DELETE")
ANY = "any"  # no expectation on the outcome (still: below 500, and the write rules)
SIGNED_OUT = "signed-out"  # a signed-in user sent to the login page: logout did its job

# (anonymous, viewer, operator)
PUBLIC = (OK, OK, OK)  # no login needed
SIGNED_IN = (LOGIN, OK, OK)  # any signed-in user
OPERATORS = (LOGIN, FORBIDDEN, OK)  # viewers get 403 (before their input is read)
NO = (LOGIN, NOT_ALLOWED, NOT_ALLOWED)  # the method is not allowed (behind the login)
NO_PUBLIC = (NOT_ALLOWED, NOT_ALLOWED, NOT_ALLOWED)  # the method is not allowed (no login needed)
STAFF = ((LOGIN, ADMIN_LOGIN), ADMIN_LOGIN, ADMIN_LOGIN)  # the admin: staff only, and no desk role is staff
WHATEVER = (ANY, ANY, ANY)  # methods no browser sends to a page whose view is Django's (the login's PUT)


@dataclass(frozen=True)
class Row:
    get: tuple
    post: tuple | None = None  # None: NO (NO_PUBLIC when GET is PUBLIC), as put and delete
    put: tuple | None = None
    delete: tuple | None = None
    self_service: bool = False  # a viewer may write here: their own session or password

    def cells(self, method: str) -> tuple:
        value = getattr(self, method.lower())
        if value is None:
            return NO_PUBLIC if self.get == PUBLIC else NO
        return value


PAGE = Row(get=SIGNED_IN)  # a page (or JSON / CSV) every signed-in user reads; nothing else
FORM = Row(get=SIGNED_IN, post=OPERATORS)  # a page that everyone reads and operators post to
ACTION = Row(get=NO, post=OPERATORS)  # an operator's POST-only action

EXPECTED: dict[str, Row] = {
    # accounts (H1 owns these views): the login page is for strangers; a signed-in user is sent on (302)
    "login": Row(get=PUBLIC, post=PUBLIC, put=WHATEVER, delete=WHATEVER, self_service=True),
    "logout": Row(get=NO, post=(LOGIN, SIGNED_OUT, SIGNED_OUT), self_service=True),
    "password_change": Row(get=SIGNED_IN, post=SIGNED_IN, put=SIGNED_IN, self_service=True),
    "password_change_done": PAGE,
    "healthz": Row(get=PUBLIC),
    # the admin's own login and logout (every other admin URL: ADMIN_RULE)
    "admin:login": Row(get=PUBLIC, post=PUBLIC, put=PUBLIC, delete=NO_PUBLIC),
    "admin:logout": Row(get=(ADMIN_LOGIN, OK, OK), post=(ADMIN_LOGIN, OK, OK), put=(ADMIN_LOGIN, OK, OK),
                        delete=(ADMIN_LOGIN, OK, OK)),  # a non-staff user is sent to /admin/, not signed out
    # research (issue 10)
    "research:studies": FORM,
    "research:folds": PAGE,
    "research:study": PAGE,
    "research:study-progress": PAGE,
    "research:study-pause": ACTION,
    "research:study-resume": ACTION,
    "research:study-cancel": ACTION,
    "research:study-apply": ACTION,
    "research:study-trials": PAGE,
    "research:trial": PAGE,
    # the lab
    "lab:runs": FORM,
    "lab:coverage": PAGE,
    "lab:run": PAGE,
    "lab:run-progress": PAGE,
    "lab:run-cancel": ACTION,
    "lab:run-price": PAGE,
    "lab:run-trades": PAGE,
    "lab:run-trades-csv": PAGE,
    "lab:run-signal": PAGE,
    "lab:compare": PAGE,
    "lab:criteria": FORM,
    "lab:desk-compare": FORM,
    # no method decorator: every method renders the comparison (it only reads)
    "lab:desk-compare-run": PAGE,
    # the desk
    "dashboard:overview": PAGE,
    "dashboard:ghosts": PAGE,
    "dashboard:ghost-toggle": ACTION,
    "dashboard:ghost-params": ACTION,
    "dashboard:ghost-auto-disable": ACTION,
    "dashboard:signal": PAGE,
    "dashboard:trades": PAGE,
    "dashboard:trades-csv": PAGE,
    "dashboard:targets": FORM,
    "dashboard:equity": PAGE,  # issue 14: equity curve and profit table
    "dashboard:risk": FORM,
    "dashboard:kill-switch-trip": ACTION,
    "dashboard:kill-switch-reset": ACTION,
    "dashboard:position-close": ACTION,  # issue 14: close one position
    "dashboard:audit": PAGE,
    "dashboard:history": FORM,
    "dashboard:instruments": FORM,  # issue 11: add an instrument from the cached ccxt markets
    "dashboard:markets-load": ACTION,
    "dashboard:instrument-feed": ACTION,
    # issue 11: the confirm page of an instrument's delete (its counts) is the first step of a write: operators only
    "dashboard:instrument-delete": Row(get=OPERATORS, post=OPERATORS),
    "dashboard:ghost-instance-add": ACTION,
    "dashboard:ghost-instance-delete": ACTION,
    "dashboard:alerts": FORM,
    "dashboard:alert-channel-edit": Row(get=OPERATORS, post=OPERATORS),  # the form shows a channel's settings
    "dashboard:alert-channel-toggle": ACTION,
    "dashboard:alert-test": ACTION,
    "dashboard:state": PAGE,
    "dashboard:plotly-js": PAGE,
}
ADMIN_RULE = Row(get=STAFF, post=STAFF, put=STAFF, delete=STAFF)

ROUTES = all_routes()
ROUTE_KEYS = [r.key for r in ROUTES]
REFUSALS = {LOGIN, ADMIN_LOGIN, FORBIDDEN, NOT_ALLOWED}


def row_for(route: Route) -> Row | None:
    if route.key in EXPECTED:
        return EXPECTED[route.key]
    return ADMIN_RULE if route.namespace == "admin" else None


def _body(cat, key: str) -> dict[str, list[str]]:
    """What the page's own form posts to this route, with a reason filled in."""
    inputs = cat[key]
    body = {n: list(v) for n, v in inputs.body.items() if v}
    for n in inputs.body:
        if "reason" in n and not any(body.get(n, [])):
            body[n] = ["matrix check"]
    return body


def _observe(route: Route, method: str, role: str, world, clients, cat, baseline) -> tuple[str, int, list[str]]:
    with rollback_after():
        watch = Watch(baseline)
        response = send(clients.fresh(role), method, route.url(sample_args(route, world)), _body(cat, route.key))
        if response.streaming:
            b"".join(response.streaming_content)
        changed = watch.changed_tables()
    got = outcome(response)
    if got == LOGIN and role != "anonymous":
        got = SIGNED_OUT
    return got, response.status_code, changed


def _suggest(route: Route, world, clients, cat, baseline) -> str:
    """The Row matching what the URL does today, for the author to check and paste."""
    words = {PUBLIC: "PUBLIC", SIGNED_IN: "SIGNED_IN", OPERATORS: "OPERATORS", NO: "NO", NO_PUBLIC: "NO_PUBLIC"}
    seen = {}
    for method in METHODS:
        cells = tuple(_observe(route, method, role, world, clients, cat, baseline)[0] for role in ROLES)
        seen[method.lower()] = tuple(LOGIN if c == SIGNED_OUT else c for c in cells)
    row = Row(**seen)
    for name, usual in (("PAGE", PAGE), ("FORM", FORM), ("ACTION", ACTION)):
        if all(row.cells(m) == usual.cells(m) for m in METHODS):
            return f'"{route.key}": {name},'
    return f'"{route.key}": Row({", ".join(f"{m}={words.get(c, repr(c))}" for m, c in seen.items())}),'


def test_every_url_has_a_row(world, clients, catalogue, baseline):
    routes, cat = catalogue
    missing = [r for r in ROUTES if row_for(r) is None]
    stale = sorted(set(EXPECTED) - set(ROUTE_KEYS))
    lines = []
    for r in missing:
        lines.append(
            f"URL /{r.pattern} (route {r.key!r}, view {r.view}) has no row in EXPECTED in "
            f"tests/hardening/test_authz_matrix.py. Add one saying who may do what there; today it answers:\n"
            f"    {_suggest(r, world, clients, cat, baseline)}\n"
            f"  (PAGE / FORM / ACTION are the usual rows; SIGNED_IN: any signed-in user, OPERATORS: viewers get "
            f"403, NO: 405, PUBLIC: no login. Check that this is what you meant before pasting it.)")
    for key in stale:
        lines.append(f"EXPECTED has a row for {key!r}, which no URL has any more: remove it from "
                     f"tests/hardening/test_authz_matrix.py.")
    assert not lines, "\n".join(lines)


@pytest.mark.parametrize("key", ROUTE_KEYS)
def test_each_role_gets_what_the_matrix_says_and_a_refusal_writes_nothing(key, world, clients, catalogue, baseline):
    routes, cat = catalogue
    route = routes[key]
    row = row_for(route)
    if row is None:
        pytest.skip("no row in EXPECTED: test_every_url_has_a_row says what to add")
    problems = []
    for method in METHODS:
        for role, want in zip(ROLES, row.cells(method), strict=True):
            got, status, changed = _observe(route, method, role, world, clients, cat, baseline)
            where = f"{role} {method} /{route.pattern} ({key})"
            allowed = want if isinstance(want, tuple) else (want,)
            if status >= 500:
                problems.append(f"{where}: {status}")
            elif want != ANY and got not in allowed:
                problems.append(f"{where}: got {got} ({status}), the matrix says {' or '.join(allowed)}")
            if changed and got in REFUSALS:
                problems.append(f"{where}: refused ({got}) but wrote to {changed}")
            elif changed and role != "operator" and not row.self_service:
                problems.append(f"{where}: a {role} wrote to {changed}")
    assert not problems, "\n".join(problems)

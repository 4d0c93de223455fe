"""Fixtures of the hardening tests (issue 12, "bad input never a 500")."""

import logging
from http.cookies import SimpleCookie

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.test import Client


class TracebackCatcher(logging.Handler):
    """Every log record at ERROR and above, or carrying an exception, anywhere in the process.

    Except the view's own answers: a view raises PermissionDenied for a viewer's POST and Http404 for an id that
    does not exist, Django turns them into a 403 / 404 and logs them at WARNING with the exception attached.
    Those are refusals, not failures; any other exception in the log is."""

    ANSWERS = (PermissionDenied, Http404)

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if record.levelno < logging.ERROR and isinstance(exc, self.ANSWERS):
            return
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)

    def text(self) -> str:
        fmt = logging.Formatter("%(levelname)s %(name)s %(message)s")
        return "\n".join(fmt.format(r) for r in self.records)

    def clear(self) -> None:
        self.records.clear()


@pytest.fixture
def tracebacks():
    """The log records a request left with a traceback or at ERROR; a test asserts the list is empty."""
    catcher = TracebackCatcher()
    root = logging.getLogger()
    root.addHandler(catcher)
    try:
        yield catcher
    finally:
        root.removeHandler(catcher)


def _client(user) -> Client:
    # raise_request_exception=False: a view's exception becomes the 500 a browser would get (and its
    # traceback in the log), so a test asserts on the status like any other instead of erroring out.
    c = Client(raise_request_exception=False)
    if user is not None:
        c.force_login(user)
    return c


@pytest.fixture
def op_http(operator) -> Client:
    return _client(operator)


@pytest.fixture
def viewer_http(viewer) -> Client:
    return _client(viewer)


# --- the generated tests' shared state: one world per module, one savepoint per example -----------------------


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, services_use_test_redis):
    """tests/hardening/world.py's desk, built once for the module in a transaction rolled back at its end.

    The module's tests take no `db` fixture: they run inside this transaction, and every generated example
    in a savepoint of its own (`rollback_after`), so one example's writes never reach the next."""
    from django.db import transaction

    from tests.hardening.world import build_world

    with django_db_blocker.unblock(), transaction.atomic():
        yield build_world()
        transaction.set_rollback(True)


class Clients(dict):
    """A signed-in client per role (and an anonymous one), signed in once per module. `fresh(role)` is a client
    with a copy of that role's cookies: a request that logs out or rotates the session (logout, login, password
    change) changes only the copy, and the savepoint's rollback restores the session row."""

    def fresh(self, role: str) -> Client:
        c = _client(None)
        c.cookies = SimpleCookie(self[role].cookies.output(header="", sep="\n"))
        return c


@pytest.fixture(scope="module")
def clients(world) -> Clients:
    return Clients({"anonymous": _client(None), **{role: _client(user) for role, user in world.users.items()}})


@pytest.fixture(scope="module")
def catalogue(world, clients):
    """(routes by key, Inputs by key): every URL pattern and the fields it reads (tests/hardening/catalogue.py)."""
    from tests.hardening.catalogue import build_catalogue

    return build_catalogue(world, clients)


@pytest.fixture(scope="module")
def baseline(catalogue):
    """The world's rows as every example starts from them (after the clients' sign-ins)."""
    from tests.hardening.invariants import Baseline

    return Baseline()

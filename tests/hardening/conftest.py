"""Fixtures of the hardening tests (issue 12, "bad input never a 500")."""

import logging

import pytest
from django.test import Client


class TracebackCatcher(logging.Handler):
    """Every log record at ERROR and above, or carrying an exception, anywhere in the process."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
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

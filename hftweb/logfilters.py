"""Logging filters that keep the log for what an operator must read (issue 14, rough edges)."""

import logging


class ForbiddenWithoutTraceback(logging.Filter):
    """A 403 is a refusal working as designed (a viewer's POST, a stale CSRF token), not a fault: Django logs it
    on django.request with the PermissionDenied's traceback, ~20 lines each. Keep the one line (method, path,
    status) and drop the traceback; 500s keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", None) == 403:
            record.exc_info = None
            record.exc_text = None
        return True

from asgiref.sync import sync_to_async
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied

from apps.accounts import throttle


class ThrottledModelBackend(ModelBackend):
    """ModelBackend behind the login throttle (apps/accounts/throttle.py).

    In the backend rather than a view so that every form that authenticates a request, the desk's login and
    the admin's, shares the same counters. A refused attempt raises PermissionDenied: `authenticate()` stops
    there without checking the password and sends user_login_failed; the refusal is left on the request
    (`login_refused`) for the login view to answer 429 with Retry-After. Calls without a request (management
    commands, shells) have no client to throttle.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None or username is None:
            return super().authenticate(request, username=username, password=password, **kwargs)
        attempt = throttle.attempt_begin(request, username)
        if attempt.refused:
            request.login_refused = attempt
            raise PermissionDenied("too many failed login attempts")
        user = super().authenticate(request, username=username, password=password, **kwargs)
        throttle.attempt_end(attempt, success=user is not None)
        return user

    async def aauthenticate(self, request, username=None, password=None, **kwargs):
        # ModelBackend's own async path would skip the throttle.
        return await sync_to_async(self.authenticate)(request, username=username, password=password, **kwargs)

from importlib import import_module

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, load_backend
from django.utils.crypto import constant_time_compare


def session_user(session_key: str | None):
    """The user a session is still logged in as, read afresh; None when it is not (any more).

    What `django.contrib.auth.get_user` checks for every HTTP request, for long-lived connections that were
    authenticated once (the desk's websocket): the session still exists (logout deletes it), names a known
    backend, the user exists and may log in (ModelBackend refuses inactive users), and the session's auth hash
    matches the password (a password change ends other sessions). Read-only, unlike `get_user`, which may
    rotate or flush the session it is given: the browser's cookie must not change under it.
    """
    if not session_key:
        return None
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    try:
        user_id, backend_path = session[SESSION_KEY], session[BACKEND_SESSION_KEY]
    except KeyError:
        return None
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return None
    user = load_backend(backend_path).get_user(user_id)
    if user is None:
        return None
    stored = session.get(HASH_SESSION_KEY) or ""
    # _get_session_auth_hash(secret=...) is how Django itself verifies against SECRET_KEY_FALLBACKS.
    for secret in [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]:
        if constant_time_compare(stored, user._get_session_auth_hash(secret=secret)):
            return user
    return None

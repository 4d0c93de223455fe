import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from apps.accounts.roles import ROLES


@transaction.atomic
def user_ensure(*, username: str, role: str, password: str | None = None) -> tuple[object, str | None]:
    """Create the user with `role` if missing. Returns (user, generated_password_or_None).

    An existing user keeps its password unless one is given: re-running `make run` never resets it.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
    User = get_user_model()
    user, created = User.objects.get_or_create(username=username)
    generated = None
    if password:
        user.set_password(password)
    elif created:
        generated = secrets.token_urlsafe(12)
        user.set_password(generated)
    user.save()
    for name in ROLES:
        Group.objects.get_or_create(name=name)
    user.groups.set([Group.objects.get(name=role)])
    return user, generated

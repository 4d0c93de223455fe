"""Receivers that close a user's open desk sockets when their login changes (apps/accounts/events.py).

Signals rather than services because these changes also come from Django itself: logout, the admin's user
form (active flag, superuser flag, groups), a password change. They only notify; they write nothing.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from apps.accounts.events import user_sockets_check

User = get_user_model()


@receiver(user_logged_out, dispatch_uid="accounts.close_sockets_on_logout")
def _logged_out(sender, request, user, **kwargs) -> None:
    if user is not None:
        # Sent before logout() flushes the session, so the consumer cannot tell by re-checking: name it.
        session_key = getattr(getattr(request, "session", None), "session_key", None)
        user_sockets_check(user.pk, ended_session_key=session_key)


@receiver(post_save, sender=User, dispatch_uid="accounts.recheck_sockets_on_user_save")
def _user_saved(sender, instance, created, update_fields=None, **kwargs) -> None:
    if created or (update_fields is not None and set(update_fields) <= {"last_login"}):
        return  # a new user has no sockets; every login saves last_login, which changes nothing for them
    user_sockets_check(instance.pk)


@receiver(post_delete, sender=User, dispatch_uid="accounts.recheck_sockets_on_user_delete")
def _user_deleted(sender, instance, **kwargs) -> None:
    user_sockets_check(instance.pk)


@receiver(m2m_changed, sender=User.groups.through, dispatch_uid="accounts.recheck_sockets_on_groups")
def _groups_changed(sender, instance, action, reverse, pk_set, **kwargs) -> None:
    if action not in {"post_add", "post_remove", "post_clear", "pre_clear"}:
        return
    if not reverse:  # user.groups.add/remove/set/clear
        if action != "pre_clear":
            user_sockets_check(instance.pk)
        return
    # group.user_set...: the users are in pk_set, or for clear() still in the group before it happens
    if action == "pre_clear":
        for user_id in instance.user_set.values_list("pk", flat=True):
            user_sockets_check(user_id)
    elif action != "post_clear":
        for user_id in pk_set or ():
            user_sockets_check(user_id)

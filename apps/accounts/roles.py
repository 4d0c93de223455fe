"""Two roles, as Django groups: operators act, viewers only look. Checked on the server for HTTP and websockets."""

OPERATOR = "operator"
VIEWER = "viewer"
ROLES = (OPERATOR, VIEWER)


def is_operator(user) -> bool:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    return user.is_superuser or user.groups.filter(name=OPERATOR).exists()


def role_of(user) -> str:
    return OPERATOR if is_operator(user) else VIEWER

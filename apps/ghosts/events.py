"""Typed browser payloads for ghost state, built in one place."""

from typing import Literal, TypedDict

from apps.common.display import state_display
from apps.ghosts.models import Ghost

GHOSTS_GROUP = "ghosts"


class GhostToggled(TypedDict):
    type: Literal["ghost.toggled", "ghost.status"]
    ghost_id: int
    name: str
    enabled: bool
    status: str
    status_reason: str
    actor: str
    state: list[list[str]]  # the engine's summary, [label, value] pairs in order (values for display: state_display)


def ghost_payload(
    ghost: Ghost, *, type_: Literal["ghost.toggled", "ghost.status"], actor: str
) -> GhostToggled:
    return GhostToggled(
        type=type_,
        ghost_id=ghost.pk,
        name=ghost.name,
        enabled=ghost.enabled,
        status=ghost.status,
        status_reason=ghost.status_reason,
        actor=actor,
        state=state_display(ghost.state_items),  # the values as the ghosts page shows them (one helper)
    )

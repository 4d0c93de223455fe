"""The desk creates one ghost per DESK kind; lab-only kinds (the textbook fader, issue 9) stay in the lab."""

import pytest

from apps.engine.registry import DESK_KINDS, GHOSTS
from apps.ghosts.models import Ghost
from apps.runtime.services import desk_ensure

pytestmark = pytest.mark.django_db


def test_desk_ensure_creates_the_desk_ghosts_and_not_the_lab_ones() -> None:
    assert "textbook_fader" in GHOSTS and "textbook_fader" not in DESK_KINDS
    desk_ensure()
    desk_ensure()  # re-run on every start: nothing added twice, still no lab ghost
    kinds = list(Ghost.objects.values_list("kind", flat=True))
    assert sorted(kinds) == sorted(DESK_KINDS)

"""Operators edit ghost params through the engine's config validation; a refused value saves nothing."""

import json

import pytest

from apps.audit.models import AuditEvent
from apps.ghosts.models import Ghost

pytestmark = pytest.mark.django_db


def _post(client, ghost, params, reason="tuning"):
    body = params if isinstance(params, str) else json.dumps(params)
    return client.post(f"/ghosts/{ghost.pk}/params/", {"params": body, "reason": reason})


def test_operator_saves_valid_params_with_audit(op_client, desk):
    c = op_client
    ghost = desk["ghost"]
    resp = _post(c, ghost, {**ghost.params, "spike_threshold_pct": 1.5})
    assert resp.status_code == 302
    ghost.refresh_from_db()
    assert ghost.params["spike_threshold_pct"] == 1.5
    event = AuditEvent.objects.get(action="ghost.params_changed")
    assert event.actor.username == "olga" and event.reason == "tuning"
    assert event.before["spike_threshold_pct"] == 1.2 and event.after["spike_threshold_pct"] == 1.5


@pytest.mark.parametrize("params, message", [
    ('{"spike_threshold_pct": ', "valid JSON"),
    ("[1, 2]", "JSON object"),
    ({"spike_threshold_pct": -1}, "spike_threshold_pct"),
    ({"spike_threshold_pct": "NaN"}, "spike_threshold_pct"),
    ({"no_such_field": 1}, "no_such_field"),
])
def test_bad_params_are_refused_with_the_validators_message_and_nothing_saved(op_client, desk, params, message):
    c = op_client
    ghost = desk["ghost"]
    before = dict(ghost.params)
    resp = _post(c, ghost, params)
    assert resp.status_code == 400
    assert message in resp.content.decode()
    assert Ghost.objects.get(pk=ghost.pk).params == before
    assert not AuditEvent.objects.filter(action="ghost.params_changed").exists()


def test_reason_required(op_client, desk):
    c = op_client
    resp = _post(c, desk["ghost"], desk["ghost"].params, reason="  ")
    assert resp.status_code == 400 and "reason is required" in resp.content.decode()


def test_viewer_cannot_edit_params_even_by_hand(viewer_client, desk):
    c = viewer_client
    before = dict(desk["ghost"].params)
    assert _post(c, desk["ghost"], {**before, "spike_threshold_pct": 2.0}).status_code == 403
    assert Ghost.objects.get(pk=desk["ghost"].pk).params == before
    page = c.get("/ghosts/").content.decode()
    assert 'name="params"' not in page and "spike_threshold_pct" in page  # read-only view


def test_unknown_ghost_is_404(op_client, desk):
    c = op_client
    assert c.post("/ghosts/99999/params/", {"params": "{}", "reason": "x"}).status_code == 404


def test_empty_object_means_all_defaults(op_client, desk):
    c = op_client
    ghost = desk["ghost"]
    _post(c, ghost, {**ghost.params, "spike_threshold_pct": 2.0})
    assert _post(c, ghost, {}).status_code == 302
    ghost.refresh_from_db()
    assert ghost.params["spike_threshold_pct"] == 1.2

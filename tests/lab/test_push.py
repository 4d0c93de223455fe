"""Lab progress reaches every desk socket: DeskConsumer joins the `lab` group (real Redis channel layer)."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from apps.dashboard.consumers import DeskConsumer
from apps.lab.services import lab_run_cancel, lab_run_create
from tests.lab.conftest import lab_request

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_viewer_socket_gets_lab_progress(btc, viewer, operator):
    comm = WebsocketCommunicator(DeskConsumer.as_asgi(), "/ws/desk/")
    comm.scope["user"] = viewer
    ok, _ = await comm.connect()
    assert ok
    try:
        run = await sync_to_async(lab_run_create)(actor=operator, settings=lab_request(btc), queue=False)
        msg = await comm.receive_json_from(timeout=3)
        assert msg == {"type": "lab.progress", "run_id": run.pk, "status": "queued", "stage": "", "bars_done": 0,
                       "bars_total": 5760, "bars_per_s": None, "eta_s": None, "error": ""}
        await sync_to_async(lab_run_cancel)(run_id=run.pk, actor=operator)
        msg = await comm.receive_json_from(timeout=3)
        assert (msg["run_id"], msg["status"]) == (run.pk, "cancelled")
    finally:
        await comm.disconnect()

"""Property: no message on the desk's websocket closes it, goes unanswered, logs a traceback or leaves an invalid
row; every frame gets exactly one answer (pong, ack or a typed error) and the socket stays open.

Generated from the consumer, not written per action: the actions are the strings DeskConsumer.receive_json
compares `action` with (or the keys of a dispatch table it reads), and the fields are every key any of its
methods reads from the message (`content.get("ghost_id")`, `content["reason"]`), both read from its source by
`consumer_actions`. A new action is fuzzed the day it is added.

First the floor, on one socket per role: every raw text below, every action with all fields set to one value,
and a command the consumer accepts (found by trying the rows' ids and the usual shapes) with one field at a
time set to each FIELD_TRAPS value. Then each hypothesis example opens a socket as the operator or the viewer
and sends 1-3 frames: a JSON object with an action (a real one mostly; half the time an accepted command with
fields changed) and fields valued from JSON's whole range (huge and negative integers, floats, NaN and
Infinity tokens, nesting, nulls, strings of the wrong shape), or raw text (nesting past the recursion limit,
4,000-digit integers, over 4 KiB, not JSON), or a binary frame. Real Channels layer on the test Redis, real
database (committed: the consumer's handlers run in their own thread), rows checked after each example.
"""

import ast
import inspect
import json
import os
import textwrap

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.apps import apps
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from apps.dashboard.consumers import DeskConsumer
from tests.hardening.invariants import row_problems

EXAMPLES = int(os.environ.get("HFT_FUZZ_SOCKET_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, print_blob=False,
                phases=[Phase.explicit, Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
ANSWERS = {"pong", "ack", "error"}  # the consumer's replies; anything else on the socket is a group broadcast


def consumer_actions(consumer: type) -> tuple[list[str], list[str]]:
    """(actions, message fields) of a consumer, read from its source: the string constants its receive_json
    compares `action` with (==, in) or keys a dispatch dict with, and the keys any method reads from `content`."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(consumer)))
    actions: set[str] = set()
    fields: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "action":
            for comp in node.comparators:
                items = comp.elts if isinstance(comp, ast.Tuple | ast.List | ast.Set) else [comp]
                actions.update(c.value for c in items if isinstance(c, ast.Constant) and isinstance(c.value, str))
        elif isinstance(node, ast.Dict) and node.values and all(isinstance(v, ast.Attribute) for v in node.values):
            # a dispatch table {"ghost.toggle": self.ghost_toggle, ...}
            actions.update(k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and isinstance(node.func.value, ast.Name) and node.func.value.id == "content" and node.args
              and isinstance(node.args[0], ast.Constant)):
            fields.add(node.args[0].value)
        elif (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "content"
              and isinstance(node.slice, ast.Constant)):
            fields.add(node.slice.value)
    fields.discard("action")
    return sorted(actions), sorted(fields)


ACTIONS, FIELDS = consumer_actions(DeskConsumer)

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 2**63, 10**40]),
    st.floats(), st.text(max_size=12), st.sampled_from(["", " ", "x" * 600, "²", "1", "true", "\x00"]),
)
JSON_ANY = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
RAW_TEXT = [
    "[" * 1000 + "]" * 1000, '{"action": "ping", "x": ' + "[" * 1000 + "]" * 1000 + "}", "[" * 5000,
    '{"action": "ping", "x": ' + "9" * 4000 + "}", '{"action": "ghost.toggle", "ghost_id": 1e999}',
    '{"action": "ping", "x": NaN}', "not json", "", " ", "null", "[]", "1", '"ping"', '{"action": 1}',
    '{"action": ["ping"]}', '{"action": "ping"', "{" + '"a": 1, ' * 800 + '"action": "ping"}', "é" * 2100,
    '{"action": "' + "x" * 5000 + '"}', '{"action": "\\ud800"}', '{"action": "ping", "action": "ghost.toggle"}',
]
RAW = st.sampled_from(RAW_TEXT)
# The floor under the random examples: every raw text above, every action with every field set to each of these
# at once, and two binary frames, all on one socket that must answer each and stay open.
FLOOR_VALUES = [None, True, 0, -1, 2**63, 10**40, 1.5, float("nan"), float("inf"), "", "²", "x" * 600,
                [[[]]], {"a": {"b": {}}}, json.loads("[" * 30 + "]" * 30)]
FLOOR = ([("text", t) for t in RAW_TEXT]
         + [("text", json.dumps({"action": a, **dict.fromkeys(FIELDS, v)})) for a in ACTIONS for v in FLOOR_VALUES]
         + [("bytes", b"\x00"), ("bytes", b"\xff" * 5000)])


@st.composite
def frames(draw, valid: dict[str, dict]) -> tuple[str, str | bytes]:
    kind = draw(st.sampled_from(["object", "object", "object", "raw", "bytes"]))
    if kind == "raw":
        return "text", draw(RAW)
    if kind == "bytes":
        return "bytes", draw(st.binary(max_size=64))
    if valid and draw(st.booleans()):  # a command the consumer accepts, some fields changed
        msg = dict(draw(st.sampled_from(list(valid.values()))))
    else:
        msg = {"action": draw(st.one_of(st.sampled_from(ACTIONS), st.sampled_from(ACTIONS), JSON_ANY))}
    for name in draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=3)) if FIELDS else []:
        msg[name] = draw(st.one_of(JSON_ANY, st.sampled_from([True, False, 1, "fuzz", *FIELD_TRAPS])))
    return "text", json.dumps(msg)  # allow_nan: NaN / Infinity tokens go out as JSON's non-standard literals


# Each field of a valid command replaced by each of these, one field at a time (the others stay valid, so the
# handler gets as far as it can with the one bad value).
FIELD_TRAPS = [2**63, 10**40, -1, 0, 1.5, float("nan"), float("inf"), None, "", "a\x00b", "x" * 3000, "²", [], {},
               True, json.loads("[" * 30 + "]" * 30)]


def _candidates(name: str) -> list:
    """Values to try for a field while looking for a command the consumer accepts: ids of the rows a `<model>_id`
    names, else the usual shapes."""
    model = next((m for m in apps.get_models() if m._meta.model_name == name.removesuffix("_id")), None)
    ids = list(model._default_manager.order_by("pk").values_list("pk", flat=True)[:2]) if model else []
    return [*ids, True, False, "checked by the fuzzer", 1]


async def _valid_commands(user) -> dict[str, dict]:
    """Per action, a message the consumer acknowledges (ack or pong), found by trying candidate values for every
    field (at most 200 tries an action): the base the field-at-a-time floor changes one field of."""
    import itertools

    from asgiref.sync import sync_to_async

    candidates = {f: await sync_to_async(_candidates)(f) for f in FIELDS}
    comm = WebsocketCommunicator(DeskConsumer.as_asgi(), "/ws/desk/")
    comm.scope["user"] = user
    ok, _ = await comm.connect(timeout=10)
    assert ok
    found: dict[str, dict] = {}
    try:
        for action in ACTIONS:
            combos = itertools.islice(itertools.product(*candidates.values()), 200)
            for values in combos:
                msg = {"action": action, **dict(zip(candidates, values, strict=True))}
                await comm.send_input({"type": "websocket.receive", "text": json.dumps(msg)})
                while (reply := json.loads((await comm.receive_output(timeout=10)).get("text") or "{}")).get(
                        "type") not in ANSWERS:
                    pass
                if reply["type"] in ("ack", "pong"):
                    found[action] = msg
                    break
    finally:
        await comm.disconnect()
    return found


def _all_row_problems() -> list[str]:
    out = []
    for model in apps.get_models():
        if model._meta.managed and not model._meta.proxy and model._default_manager.count() < 1000:
            for obj in model._default_manager.all():
                out += row_problems(obj)
    return out


async def _exchange(user, sent: list[tuple[str, str | bytes]]) -> list[str]:
    """Open a socket as `user`, send the frames, read one answer per frame; the problems seen."""
    comm = WebsocketCommunicator(DeskConsumer.as_asgi(), "/ws/desk/")
    comm.scope["user"] = user
    ok, code = await comm.connect(timeout=10)  # joining the groups on Redis can take over 1 s on a busy machine
    if not ok:
        return [f"connect refused ({code})"]
    problems = []
    try:
        for kind, payload in sent:
            # send_input, not send_to: send_to refuses an empty frame, which a browser can send
            await comm.send_input({"type": "websocket.receive", "text" if kind == "text" else "bytes": payload})
            while True:  # skip group broadcasts (a successful toggle is also pushed to the ghosts group)
                out = await comm.receive_output(timeout=10)
                if out["type"] == "websocket.close":
                    problems.append(f"socket closed with {out.get('code')} after {payload[:80]!r}")
                    return problems
                reply = json.loads(out.get("text") or "{}")
                if reply.get("type") in ANSWERS:
                    break
        await comm.send_to(text_data=json.dumps({"action": "ping"}))  # still open, still answering
        out = await comm.receive_output(timeout=10)
        while json.loads(out.get("text") or "{}").get("type") not in ANSWERS:
            out = await comm.receive_output(timeout=10)
        if json.loads(out.get("text") or "{}") != {"type": "pong"}:
            problems.append(f"a ping after the frames got {out}")
    finally:
        await comm.disconnect()
    return problems


def test_the_consumer_has_actions_to_fuzz():
    """If the consumer's dispatch changes shape, consumer_actions must follow (or the fuzz tests nothing)."""
    assert {"ping", "ghost.toggle"} <= set(ACTIONS), ACTIONS
    assert {"ghost_id", "enabled", "reason"} <= set(FIELDS), FIELDS


@pytest.mark.django_db(transaction=True)
def test_no_message_closes_the_socket_goes_unanswered_or_writes_an_invalid_row(desk, operator, viewer, tracebacks):
    users = {"operator": operator, "viewer": viewer}
    valid = async_to_sync(_valid_commands)(operator)
    assert set(valid) == set(ACTIONS), f"no accepted message found for {set(ACTIONS) - set(valid)}"
    # each accepted command, and the same with each of its booleans flipped (a toggle that changes something)
    bases = [b for msg in valid.values()
             for b in [msg, *({**msg, k: not v} for k, v in msg.items() if isinstance(v, bool))]]
    one_field = [("text", json.dumps({**msg, name: trap})) for msg in bases for name in FIELDS for trap in FIELD_TRAPS]
    for role in users:
        problems = async_to_sync(_exchange)(users[role], FLOOR + one_field)
        assert not problems, f"{role}: " + "\n".join(problems)
        assert not tracebacks.records, tracebacks.text()
    assert not (bad_rows := _all_row_problems()), "\n".join(bad_rows)

    @FUZZ
    @given(role=st.sampled_from(["operator", "operator", "viewer"]),
           sent=st.lists(frames(valid), min_size=1, max_size=3))
    def example(role, sent):
        note(f"{role}: {[(k, p[:200]) for k, p in sent]}")
        tracebacks.clear()
        problems = async_to_sync(_exchange)(users[role], sent)
        assert not problems, "\n".join(problems)
        assert not tracebacks.records, tracebacks.text()
        bad_rows = _all_row_problems()
        assert not bad_rows, "\n".join(bad_rows)

    example()

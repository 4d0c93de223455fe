"""500s the generated tests (test_fuzz_http.py) found beyond the six of the issue, each kept as a plain case so
that its cause is named here and not only in a hypothesis report. The same three traps as the issue's:
isdigit() accepting "²" before int() refuses it, json.loads recursing past the limit, the int digit limit.

The research pages' cases were found the same way and fixed through apps.common.parsing."""

import pytest

from tests.hardening.catalogue import rollback_after

pytestmark = pytest.mark.django_db  # the world fixture holds the transaction; the mark sets the test DB up

DEEP = "[" * 2000
BIG = '{"a": ' + "9" * 4301 + "}"

LAB = [
    ("GET", "/lab/runs/{run}/price.json?start=²", 400),  # _ms: isdigit() then int()
    ("GET", "/lab/runs/{run}/trades/?after=²", 200),  # _ms again; a bad cursor is ignored (first page)
    ("GET", "/lab/?before=²", 200),  # the runs list's keyset cursor
    ("GET", "/lab/?from=²", 200),  # "copy a run into the form": says there is no such run
    ("GET", "/lab/compare/?runs=²,1", 400),  # parse_run_ids
    ("GET", "/lab/coverage.json?instrument=²", 200),  # _form_window
    ("GET", "/lab/coverage.json?instrument={inst}&params_spike_fader=" + DEEP, 200),  # json.loads recursion
    ("POST", "/lab/", 400),  # the new-run form's ghost params, nested 2,000 deep (below)
    ("POST", "/lab/#big", 400),  # ... and with a 4,301-digit integer
]
RESEARCH = [
    ("GET", "/lab/studies/?before=²", 200, "studies_page/_render_studies: before.isdigit() then int()"),
    ("GET", "/lab/studies/{study}/?trial=²", 200, "_apply_context: selected.isdigit() then int()"),
    ("POST", "/lab/studies/{study}/apply/", 400, "study_apply -> _apply_context with trial=²"),
    ("GET", "/lab/studies/{study}/trials/?after=1:²", 200, "study_trials: all(p.isdigit() ...) then int()"),
    ("POST", "/lab/studies/#deep", 400, "forms.py StudyForm.clean: json.loads(fixed_<kind>) nested 2,000 deep"),
    ("POST", "/lab/studies/#big", 400, "forms.py StudyForm.clean: json.loads(fixed_<kind>), a 4,301-digit integer"),
]


def _request(world, clients, method: str, url: str):
    inst = world.ids["instrument_id"][0]
    url = url.format(run=world.ids["run_id"][0], study=world.ids["study_id"][0], inst=inst)
    client = clients.fresh("operator")
    with rollback_after():
        if method == "GET":
            return client.get(url)
        params = BIG if url.endswith("#big") else DEEP
        if url.startswith("/lab/studies/#"):
            return client.post("/lab/studies/", {"instrument": str(inst), "start": "2025-06-21", "end": "2025-06-25",
                                                 "target": "spike_fader", "fixed_spike_fader": params})
        if url.startswith("/lab/studies/"):
            return client.post(url, {"trial": "²", "ghost": str(world.ids["ghost_id"][0]), "reason": "fuzz"})
        return client.post("/lab/", {"instrument": str(inst), "start": "2025-06-21", "end": "2025-06-23",
                                     "start_capital": "10000", "sizing_mode": "risk",
                                     "g_spike_fader_on": "on", "g_spike_fader_params": params})


@pytest.mark.parametrize(("method", "url", "status"), LAB)
def test_lab_pages_refuse_with_a_status_not_a_500(method, url, status, world, clients, tracebacks):
    r = _request(world, clients, method, url)
    assert r.status_code == status, (r.status_code, tracebacks.text())
    assert not tracebacks.records, tracebacks.text()


@pytest.mark.parametrize(("method", "url", "status", "cause"), RESEARCH)
def test_research_pages_refuse_with_a_status_not_a_500(method, url, status, cause, world, clients, tracebacks):
    r = _request(world, clients, method, url)
    assert r.status_code == status, (r.status_code, cause, tracebacks.text())
    assert not tracebacks.records, tracebacks.text()


# A NUL character in a hand-read reason: SQLite stores it, PostgreSQL (production) refuses the whole row. Found
# by the invariant "no NUL in text" (tests/hardening/invariants.py) on the kill switch; the same helper reads
# the risk limits' and the auto-disable rules' reasons.
@pytest.mark.parametrize("path", ["/risk/kill-switch/trip/", "/risk/", "/ghosts/{ghost}/auto-disable/"])
def test_a_reason_with_a_nul_character_is_refused_and_nothing_is_stored(path, world, clients, tracebacks):
    from apps.audit.models import AuditEvent
    from apps.engine.performance import AutoDisableRules
    from apps.engine.risk import RiskLimits
    from apps.trading.models import KillSwitch

    form = {k: str(v) for k, v in {**RiskLimits().to_params(), **AutoDisableRules().to_params()}.items()
            if not isinstance(v, bool)}
    with rollback_after():
        before = AuditEvent.objects.count()
        r = clients.fresh("operator").post(path.format(ghost=world.ids["ghost_id"][0]),
                                           {**form, "reason": "fat \x00 finger"})
        assert r.status_code == 400 and "null characters are not allowed" in r.content.decode()
        assert AuditEvent.objects.count() == before and not KillSwitch.objects.filter(tripped=True).exists()
    assert not tracebacks.records, tracebacks.text()

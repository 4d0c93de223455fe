"""The research pages over Django's test client, on real candles (tests/research/conftest.py imports nine days
of the 90-day BTC/USDT file): access and roles (a viewer's forged POST is 403 and changes nothing), the
new-study form (defaults from the engine's search space with its validated bounds; bad forms with clear
errors), a study run inline through the real services and read back through every page (headline figures
out of sample only, per-fold IS vs OOS, stability, charts, DSR and PBO), pause/resume/cancel, apply a trial to
a ghost, and query counts that stay constant as studies and trials grow."""

import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.research.models import Study, Trial
from apps.research.services import study_create, study_run_inline
from tests.research.conftest import study_request

pytestmark = pytest.mark.django_db

STUDIES = reverse("research:studies")


def form_data(inst, **over) -> dict:
    """What the new-study form posts: the study of tests/research/conftest.study_request, field by field."""
    from apps.engine.risk import RiskLimits
    from tests.lab.conftest import SENSITIVE_FADER

    data = {
        "instrument": str(inst.pk), "start": "2025-06-19", "end": "2025-06-28", "start_capital": "10000",
        "sizing_mode": "stake", "stake": "1000", "target": "spike_fader",
        "fixed_spike_fader": json.dumps(SENSITIVE_FADER),
        "sp_spike_fader__spike_threshold_pct__on": "on", "sp_spike_fader__spike_threshold_pct__low": "0.5",
        "sp_spike_fader__spike_threshold_pct__high": "1.5", "sp_spike_fader__spike_threshold_pct__step": "0.05",
        "sp_spike_fader__take_profit_pct__on": "on", "sp_spike_fader__take_profit_pct__low": "0.2",
        "sp_spike_fader__take_profit_pct__high": "0.45", "sp_spike_fader__take_profit_pct__step": "0.05",
        "objective": "net_pnl", "min_trades": "1", "scheme": "rolling", "train_days": "3", "test_days": "2",
        "sampler": "tpe", "seed": "7", "budget_mode": "trials", "budget_trials": "8",
    }
    for k, v in RiskLimits().to_params().items():
        if isinstance(v, bool):
            if v:
                data[f"limit_{k}"] = "on"
        else:
            data[f"limit_{k}"] = str(v)
    data.update(over)
    return {k: v for k, v in data.items() if v is not None}


@pytest.fixture
def fader(btc9):
    """A spike fader ghost on the desk, on the study's instrument (what a study's trial is applied to)."""
    from apps.ghosts.services import ghost_create

    return ghost_create(name="fader-btc", kind="spike_fader", instrument=btc9, enabled=True)


def done_study(inst, actor=None, **over) -> Study:
    study = study_create(actor=actor, settings=study_request(inst, **over), queue=False)
    study = study_run_inline(study_id=study.pk)
    assert study.status == "done", study.error
    return Study.objects.get(pk=study.pk)


def _json_script(html: str, element_id: str):
    return json.loads(html[html.index(f'id="{element_id}"'):].split(">", 1)[1].split("</script>")[0])


# --- access and roles -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/lab/studies/", "/lab/studies/1/", "/lab/studies/1/progress.json",
                                  "/lab/studies/1/trials/", "/lab/studies/1/trials/1/"])
def test_anonymous_is_sent_to_login(client, path):
    response = client.get(path)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_studies_page_renders_for_both_roles_only_operators_get_the_form(make_user, btc9, role):
    c = Client()
    c.force_login(make_user("someone", role))
    html = c.get(STUDIES).content.decode()
    assert 'href="/lab/studies/"' in html and 'aria-current="page">Studies<' in html  # the sidebar link
    assert "NaN" not in html and "No studies yet" in html
    if role == "operator":
        assert 'id="study-form"' in html
    else:
        assert 'id="study-form"' not in html and "only operators can start" in html


def test_the_form_defaults_from_the_engines_search_space_with_its_bounds(op_client, btc9):
    from apps.engine.search_space import default_space, param_bounds

    r = op_client.get(STUDIES)
    html = r.content.decode()
    bounds = param_bounds("spike_fader")
    for pr in default_space("spike_fader"):
        row = html[html.index(f'id="space-row-spike_fader-{pr.name}"'):]
        row = row[:row.index("</tr>")]
        assert f'id="sp_spike_fader__{pr.name}__on" value="on" checked' in row
        assert f'value="{pr.low:.10g}"' in row and f'value="{pr.high:.10g}"' in row, row
        assert bounds[pr.name].text().replace(">", "&gt;").replace("<", "&lt;") in row
    assert "priority" not in {p.name for p in default_space("spike_fader")}
    assert 'id="space-row-spike_fader-priority"' not in html
    # every kind has its table (the desk target shows the desk kinds' together); the range's folds are said
    for kind in ("trend_filter", "cvd_detector", "textbook_fader"):
        assert f'id="space-{kind}"' in html
    assert "fold(s): the first trains 2025-06-19" in html, html[html.index('id="fold-note"'):][:300]


def test_operator_starts_a_study(op_client, operator, btc9):
    r = op_client.post(STUDIES, form_data(btc9, name="fader 3/2"))
    study = Study.objects.get()
    assert r.status_code == 302 and r["Location"] == reverse("research:study", args=[study.pk])
    s = study.settings
    assert study.status == "queued" and study.name == "fader 3/2" and study.created_by == operator
    assert [(x["name"], x["low"], x["high"], x["step"]) for x in s["space"]] == [
        ("spike_threshold_pct", 0.5, 1.5, 0.05), ("take_profit_pct", 0.2, 0.45, 0.05)]
    assert s["ghosts"][0]["params"]["spike_threshold_pct"] == 0.5  # the fixed params (searched ones overridden)
    assert (s["objective"], s["min_trades"], s["scheme"], s["train_days"], s["test_days"], s["step_days"]) == (
        "net_pnl", 1, "rolling", 3, 2, 2)
    assert (s["sampler"], s["seed"], s["budget_trials"], s["budget_minutes"]) == ("tpe", 7, 8, None)
    assert s["sizing"] == {"mode": "stake", "stake": 1000.0, "equity_pct": 10.0}
    assert len(study.folds) == 3 and study.trials_total == 24
    assert AuditEvent.objects.filter(action="study.created", actor=operator).count() == 1
    page = op_client.get(r["Location"]).content.decode()
    assert 'id="progress"' in page and 'id="pause-btn"' in page and 'id="cancel-btn"' in page
    assert page.count('id="fold-progress-') == 3 and "queued" in page


def test_a_desk_study_names_its_parameters_by_ghost(op_client, btc9):
    from apps.engine.registry import DESK_KINDS

    data = form_data(btc9, target="desk", fixed_spike_fader="{}", budget_trials="2")
    for kind in DESK_KINDS:
        data[f"fixed_{kind}"] = "{}"
    # only two of the desk's rows are ticked (the others were left on by default in a browser; here unticked)
    r = op_client.post(STUDIES, data)
    assert r.status_code == 302, r.content.decode()[:3000]
    s = Study.objects.get().settings
    assert s["target"] == "desk" and [x["name"] for x in s["space"]] == [
        "spike_fader.spike_threshold_pct", "spike_fader.take_profit_pct"]
    assert sorted(g["kind"] for g in s["ghosts"]) == sorted(DESK_KINDS)


# --- bad forms ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("over", "text"), [
    ({"sp_spike_fader__spike_threshold_pct__low": "-1"}, "low -1 is outside the allowed range"),
    ({"sp_spike_fader__spike_threshold_pct__high": "abc"}, "spike_threshold_pct: high &#x27;abc&#x27; is not a number"),
    ({"sp_spike_fader__spike_threshold_pct__low": "2", "sp_spike_fader__spike_threshold_pct__high": "1"},
     "low (2) must be below high (1)"),
    ({"sp_spike_fader__spike_threshold_pct__step": "0.07"}, "must be a whole number of steps"),
    ({"sp_spike_fader__spike_threshold_pct__on": None, "sp_spike_fader__take_profit_pct__on": None},
     "tick at least one parameter to search"),
    ({"fixed_spike_fader": "{"}, "spike_fader fixed parameters: not valid JSON"),
    ({"fixed_spike_fader": '{"windw": 3}'}, "unknown spike_fader parameter(s): windw"),
    ({"train_days": "8"}, "no fold fits"),
    ({"test_days": "2", "step_days": "1"}, "step_days (1) must be at least test_days (2)"),
    ({"train_days": "x"}, "train days: enter a whole number of days"),
    ({"budget_trials": ""}, "enter the number of trials per fold"),
    ({"budget_trials": "0"}, "trials per fold must be at least 1"),
    ({"objective": "luck"}, "objective must be one of"),
    ({"target": "martingale"}, "no such ghost kind: martingale"),
    ({"start": "2024-01-01", "end": "2024-02-01"}, "no stored 1m candles of binance:BTC/USDT"),
    ({"start_capital": "lots"}, "Start capital: &#x27;lots&#x27; is not a number"),
    ({"sampler": "grid", "sp_spike_fader__spike_threshold_pct__step": ""}, "a grid search needs a step"),
])
def test_bad_forms_get_clear_errors_and_start_nothing(op_client, btc9, over, text):
    r = op_client.post(STUDIES, form_data(btc9, **over))
    html = r.content.decode()
    assert r.status_code == 400, html[:300]
    assert "The study was not started" in html and text in html, html[html.index('id="study-errors"'):][:1500]
    assert not Study.objects.exists()
    assert 'id="study-form"' in html  # the form comes back with what was typed


def test_a_refused_range_is_marked_on_its_row(op_client, btc9):
    html = op_client.post(STUDIES, form_data(btc9, sp_spike_fader__take_profit_pct__high="99")).content.decode()
    row = html[html.index('id="space-row-spike_fader-take_profit_pct"'):]
    row = row[:row.index('class="space-row', 20)]
    assert 'aria-invalid="true"' in row and "high 99 is outside the allowed range" in row and 'value="99"' in row


def test_folds_json_says_how_many_folds_the_lengths_make(op_client, btc9):
    url = reverse("research:folds")
    ok = op_client.get(url, {"start": "2025-06-19", "end": "2025-06-28", "scheme": "rolling", "train_days": "3",
                             "test_days": "2"}).json()
    assert ok["note"].startswith("3 fold(s): the first trains 2025-06-19 → 2025-06-22")
    assert "the last tests 2025-06-26 → 2025-06-28" in ok["note"]
    bad = op_client.get(url, {"start": "2025-06-19", "end": "2025-06-28", "scheme": "rolling", "train_days": "30",
                              "test_days": "2"}).json()
    assert bad["note"].startswith("no fold fits")


# --- a finished study through every page -------------------------------------------------------------------------


def test_a_done_study_shows_out_of_sample_headlines_folds_stability_charts_and_overfitting(op_client, btc9,
                                                                                              operator):
    study = done_study(btc9, operator)
    res = study.results
    html = op_client.get(reverse("research:study", args=[study.pk])).content.decode()
    assert "NaN" not in html and " hidden>" in html[html.index('id="progress"'):][:400]
    # headline: out-of-sample figures only, with their formulas
    head = html[html.index('id="headline"'):html.index('id="overfitting"')]
    for f in res["oos"]["figures"]:
        assert f"fig-{f['key']}" in head
        assert f["formula"].replace("&", "&amp;").replace("'", "&#x27;")[:40] in head
    net = next(f for f in res["oos"]["figures"] if f["key"] == "net_pnl")["value"]
    assert f"{net:+,.2f}" in head
    assert "In-sample" not in head and "train" not in head.lower().replace("train window only", "")
    # per fold: IS vs OOS and the degradation, each fold's chosen trial linked
    for f in res["folds"]:
        row = html[html.index(f'id="fold-{f["index"]}"'):]
        row = row[:row.index("</tr>")]
        if f["trial_id"]:
            assert f"#{f['number']}<" in row and f"{f['is_value']:,.3f}" in row
            if f["degradation"] is not None:
                assert f"{f['degradation']:+,.3f}" in row
    # stability: each searched parameter's chosen value per fold and its spread
    for row in res["stability"]:
        assert f'data-param="{row["name"]}"' in html
    # DSR and PBO with their numbers and formulas in the tooltip
    dsr = html[html.index('id="dsr"'):][:2500]
    assert "Deflated Sharpe ratio (Bailey &amp; López de Prado 2014) = PSR(SR0)" in dsr
    if res["dsr"]["probability"] is not None:
        assert f"{res['dsr']['probability']:.3f}" in dsr
    pbo = html[html.index('id="pbo"'):][:2500]
    assert "CSCV" in pbo and "PBO = the share of splits with λ ≤ 0" in pbo
    assert res["pbo"]["value"] is not None  # 9 days, 24 trials: CSCV with S = 4 blocks
    assert f"{res['pbo']['value']:.0%}" in pbo and 'id="logit-chart"' in pbo
    # chart data: the stitched equity compounds the stored out-of-sample returns; parcoords has every scored trial
    data = _json_script(html, "study-chart-data")
    eq = data["equity"]
    assert eq["days"] == len(res["oos"]["days"]) and eq["t"][0] < eq["t"][-1]
    final = res["oos"]["start_capital"] * (1 + next(f for f in res["oos"]["figures"] if f["key"] == "return_pct")[
        "value"] / 100)
    assert eq["equity"][-1] == pytest.approx(final, rel=1e-9)
    scored = Trial.objects.filter(study=study, status="done", value__isnull=False).count()
    assert data["parcoords"]["n"] == scored and data["parcoords"]["of"] == Trial.objects.filter(study=study).count()
    assert data["logits"]["count"] == res["pbo"]["logit_hist"]["counts"]
    assert 0 < sum(data["logits"]["count"]) <= res["pbo"]["n_combinations"]
    labels = [d["label"] for d in data["parcoords"]["dimensions"]]
    assert labels[:3] == ["fold", "spike_threshold_pct", "take_profit_pct"] and "train net_pnl" in labels
    assert "/vendor/plotly.min.js" in html
    # the best trials of each fold, the chosen one marked; the apply card for operators
    assert html.count('class="trial done chosen"') == sum(1 for f in res["folds"] if f["trial_id"])
    assert 'id="apply-none"' in html  # no spike fader on this desk yet


def test_trials_page_filters_pages_and_links_each_trial(op_client, viewer_client, btc9, operator):
    study = done_study(btc9, operator)
    url = reverse("research:study-trials", args=[study.pk])
    html = viewer_client.get(url).content.decode()
    assert html.count('<tr id="trial-') == Trial.objects.filter(study=study).count() == 24
    html = viewer_client.get(url, {"fold": "2"}).content.decode()
    assert html.count('<tr id="trial-') == 8 and 'data-fold="1"' in html and 'data-fold="0"' not in html
    bad = viewer_client.get(url, {"fold": "x", "status": "lucky"})
    assert bad.status_code == 400 and "fold: enter a fold number" in bad.content.decode()
    t = Trial.objects.filter(study=study, status="done").order_by("fold", "number").first()
    page = viewer_client.get(reverse("research:trial", args=[study.pk, t.pk])).content.decode()
    assert f"fold {t.fold + 1} · trial #{t.number}" in page and 'id="apply-link"' not in page
    for k, v in t.params.items():
        assert f"&quot;{k}&quot;: {v}" in page
    assert 'id="apply-link"' in op_client.get(reverse("research:trial", args=[study.pk, t.pk])).content.decode()
    assert viewer_client.get(reverse("research:trial", args=[study.pk, 999_999])).status_code == 404
    assert viewer_client.get(reverse("research:study", args=[999_999])).status_code == 404


def test_progress_json_is_the_study_progress_event(viewer_client, btc9, operator):
    study = study_create(actor=operator, settings=study_request(btc9), queue=False)
    p = viewer_client.get(reverse("research:study-progress", args=[study.pk])).json()
    assert p == {"type": "study.progress", "study_id": study.pk, "status": "queued", "trials_done": 0,
                 "trials_total": 24, "eta_s": None, "error": "",
                 "folds": [{"index": k, "done": 0, "best_train": None, "best_test": None} for k in range(3)]}


# --- operator actions and a viewer's forged POSTs ---------------------------------------------------------------


def test_operator_pauses_resumes_and_cancels(op_client, btc9, operator):
    study = study_create(actor=operator, settings=study_request(btc9), queue=False)
    url = lambda verb: reverse(f"research:study-{verb}", args=[study.pk])  # noqa: E731
    r = op_client.post(url("pause"), HTTP_ACCEPT="application/json")
    assert r.status_code == 200 and r.json()["status"] == "paused" and r.json()["progress"]["status"] == "paused"
    html = op_client.get(reverse("research:study", args=[study.pk])).content.decode()
    assert 'id="resume-form" data-when="paused">' in html
    assert 'id="pause-form" data-when="queued running" hidden>' in html
    r = op_client.post(url("resume"))  # without JS: a redirect back to the page
    assert r.status_code == 302 and Study.objects.get(pk=study.pk).status == "running"
    r = op_client.post(url("cancel"), HTTP_ACCEPT="application/json")
    assert r.json()["status"] == "cancelled"
    assert [e.action for e in AuditEvent.objects.filter(action__startswith="study.").order_by("id")] == [
        "study.created", "study.paused", "study.resumed", "study.cancelled"]
    html = op_client.get(reverse("research:study", args=[study.pk])).content.decode()
    assert 'id="study-cancelled"' in html and "it has no results" in html
    assert op_client.post(reverse("research:study-pause", args=[999_999])).status_code == 404
    assert op_client.get(url("pause")).status_code == 405


def test_viewer_forged_posts_are_refused_and_change_nothing(viewer_client, btc9, operator, fader):
    assert viewer_client.post(STUDIES, form_data(btc9)).status_code == 403
    assert not Study.objects.exists()
    study = done_study(btc9, operator)
    for verb in ("pause", "resume", "cancel"):
        for headers in ({}, {"HTTP_ACCEPT": "application/json"}):
            r = viewer_client.post(reverse(f"research:study-{verb}", args=[study.pk]), **headers)
            assert r.status_code == 403, verb
    ghost = fader
    before = dict(ghost.params)
    trial = Trial.objects.filter(study=study, status="done").first()
    r = viewer_client.post(reverse("research:study-apply", args=[study.pk]),
                           {"trial": trial.pk, "ghost": ghost.pk, "reason": "forged"})
    assert r.status_code == 403
    ghost.refresh_from_db()
    assert ghost.params == before and ghost.params_source is None
    assert Study.objects.get(pk=study.pk).status == "done"
    assert not AuditEvent.objects.filter(reason__contains="forged").exists()
    html = viewer_client.get(reverse("research:study", args=[study.pk])).content.decode()
    assert 'id="apply"' not in html and 'id="pause-btn"' not in html and "Apply…" not in html


def test_operator_applies_a_trial_to_a_ghost_and_the_ghosts_page_says_so(op_client, btc9, operator, fader):
    study = done_study(btc9, operator)
    ghost = fader
    chosen = next(f for f in reversed(study.results["folds"]) if f["trial_id"])
    html = op_client.get(reverse("research:study", args=[study.pk])).content.decode()
    card = html[html.index('id="apply"'):]
    assert f'<option value="{chosen["trial_id"]}" selected>' in card  # the last fold's choice by default
    assert f'<option value="{ghost.pk}"' in card
    url = reverse("research:study-apply", args=[study.pk])
    no_reason = op_client.post(url, {"trial": chosen["trial_id"], "ghost": ghost.pk, "reason": " "})
    assert no_reason.status_code == 400 and "a reason is required" in no_reason.content.decode()
    ghost.refresh_from_db()
    assert ghost.params_source is None
    r = op_client.post(url, {"trial": chosen["trial_id"], "ghost": ghost.pk, "reason": "fold 3 choice, OOS positive"})
    assert r.status_code == 302 and r["Location"] == reverse("dashboard:ghosts") + f"#ghost-{ghost.pk}"
    ghost.refresh_from_db()
    trial = Trial.objects.get(pk=chosen["trial_id"])
    assert all(ghost.params[k] == v for k, v in trial.params.items())
    assert ghost.params_source["study_id"] == study.pk and ghost.params_source["trial_id"] == trial.pk
    ev = AuditEvent.objects.get(action="study.applied")
    assert ev.actor == operator and ev.reason == "fold 3 choice, OOS positive" and ev.after["trial_id"] == trial.pk
    page = op_client.get(reverse("dashboard:ghosts")).content.decode()
    line = page[page.index(f'id="params-source-{ghost.pk}"'):][:800]
    assert f"study #{study.pk}, fold {trial.fold + 1}, trial {trial.pk}" in line and "by olga" in line
    assert reverse("research:trial", args=[study.pk, trial.pk]) in line
    # a trial that is not done, or of another study, is refused with the reason
    other = Trial.objects.filter(study=study).exclude(status="done").first()
    if other is not None:
        bad = op_client.post(url, {"trial": other.pk, "ghost": ghost.pk, "reason": "x"})
        assert bad.status_code == 400 and "only a done trial can be applied" in bad.content.decode()
    bad = op_client.post(url, {"trial": 999_999, "ghost": ghost.pk, "reason": "x"})
    assert bad.status_code == 400 and f"no trial 999999 in study {study.pk}" in bad.content.decode()


def test_failed_study_says_why(op_client, btc9, operator):
    study = study_create(actor=operator, settings=study_request(btc9), queue=False)
    Study.objects.filter(pk=study.pk).update(status="failed", error="every trial of fold 1's batch 1 failed")
    html = op_client.get(reverse("research:study", args=[study.pk])).content.decode()
    assert 'id="study-error"' in html and "every trial of fold 1&#x27;s batch 1 failed" in html


# --- query counts -----------------------------------------------------------------------------------------------


def _count(client, url, **params) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url, params).status_code == 200
    return len(ctx.captured_queries)


def test_query_counts_do_not_grow_with_studies_or_trials(op_client, btc9, operator):
    for _ in range(2):
        study_create(actor=operator, settings=study_request(btc9), queue=False)
    _count(op_client, STUDIES)  # the candle stats are cached under the newest candle id: count the steady state
    few = _count(op_client, STUDIES)
    for _ in range(5):
        study_create(actor=operator, settings=study_request(btc9), queue=False)
    assert _count(op_client, STUDIES) == few
    small = done_study(btc9, operator, budget_trials=4)
    big = done_study(btc9, operator, budget_trials=12)
    assert Trial.objects.filter(study=big).count() == 3 * Trial.objects.filter(study=small).count()
    for name in ("research:study", "research:study-trials"):
        assert _count(op_client, reverse(name, args=[small.pk])) == _count(op_client, reverse(name, args=[big.pk]))


def test_a_desk_studys_trial_applies_to_a_ghost_of_a_searched_kind(op_client, btc9, operator, fader):
    study = done_study(btc9, operator, target="desk", params=None, budget_trials=2, batch_size=2,
                       space=[{"name": "spike_fader.spike_threshold_pct", "low": 0.5, "high": 1.5, "step": 0.05}],
                       fixed={"spike_fader": {"take_profit_pct": 0.4, "min_target_pct": 0.2}})
    html = op_client.get(reverse("research:study", args=[study.pk])).content.decode()
    card = html[html.index('id="apply"'):]
    assert "Ghost (spike_fader)" in card and f'<option value="{fader.pk}"' in card
    trial = Trial.objects.filter(study=study, status="done").first()
    assert list(trial.params) == ["spike_fader.spike_threshold_pct"]
    r = op_client.post(reverse("research:study-apply", args=[study.pk]),
                       {"trial": trial.pk, "ghost": fader.pk, "reason": "desk study"})
    assert r.status_code == 302
    fader.refresh_from_db()
    assert fader.params["spike_threshold_pct"] == trial.params["spike_fader.spike_threshold_pct"]
    assert fader.params["take_profit_pct"] == 0.4 and fader.params_source["trial_id"] == trial.pk


def test_the_list_shows_each_studys_out_of_sample_headline_and_a_minutes_budget(op_client, btc9, operator):
    study = done_study(btc9, operator)
    figs = {f["key"]: f["value"] for f in study.results["oos"]["figures"]}
    html = op_client.get(STUDIES).content.decode()
    row = html[html.index(f'id="study-{study.pk}"'):]
    row = row[:row.index("</tr>")]
    from apps.dashboard.templatetags.desk import pct

    assert "24 / 24" in row and pct(figs["return_pct"], 2) in row  # the desk's % format (a real minus sign)
    assert ("—" if figs["sharpe"] is None else f"{figs['sharpe']:.2f}") in row
    r = op_client.post(STUDIES, form_data(btc9, budget_mode="minutes", budget_minutes="0.5", budget_trials=""))
    assert r.status_code == 302
    s = Study.objects.latest("id")
    assert s.settings["budget_minutes"] == 0.5 and s.settings["budget_trials"] is None and s.trials_total is None
    page = op_client.get(r["Location"]).content.decode()
    assert "budget 0.5 min of running time" in page and 'id="progress-total">—<' in page

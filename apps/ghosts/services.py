"""Writes for ghosts. Every transition is explicit, audited, and pushed to browsers after commit."""

from datetime import datetime

from django.db import transaction

from apps.audit.services import audit_record
from apps.common.realtime import send_on_commit
from apps.engine.registry import config_from_params, is_plugin
from apps.ghosts.events import GHOSTS_GROUP, ghost_payload
from apps.ghosts.models import Ghost, GhostStatus
from apps.market.models import Instrument


class GhostError(ValueError):
    """A refused ghost change, with a message fit for the operator."""


def _state(ghost: Ghost) -> dict:
    return {"enabled": ghost.enabled, "status": ghost.status, "status_reason": ghost.status_reason}


@transaction.atomic
def ghost_create(
    *,
    name: str,
    kind: str,
    instrument: Instrument,
    params: dict | None = None,
    enabled: bool = False,
    actor=None,
) -> Ghost:
    cfg = config_from_params(kind, params or {})  # ConfigError (a ValueError) on bad params
    ghost = Ghost.objects.create(
        name=name,
        kind=kind,
        instrument=instrument,
        params=cfg.to_params(),
        enabled=enabled,
        status=GhostStatus.ACTIVE if enabled else GhostStatus.DISABLED,
    )
    audit_record(actor=actor, action="ghost.created", obj=ghost, after={"kind": kind, **_state(ghost)})
    return ghost


@transaction.atomic
def ghost_set_enabled(*, ghost_id: int, enabled: bool, actor, reason: str, data_time: datetime | None = None
                      ) -> Ghost:
    """Enable or disable a ghost. The next evaluation reads the flag from the database, so it applies at once.
    `data_time`: when the caller knows the data time of what caused it (an auto-disable: the close that breached
    the rule); else the audit row takes the desk's clock."""
    reason = (reason or "").strip()
    if not reason:
        raise GhostError("a reason is required")
    if len(reason) > 500:
        raise GhostError("reason is too long (max 500 characters)")
    ghost = Ghost.objects.select_for_update().get(pk=ghost_id)  # DoesNotExist -> 404 in views
    before = _state(ghost)
    if ghost.enabled == enabled:
        return ghost  # idempotent: a double click or a replayed request changes nothing
    ghost.enabled = enabled
    ghost.status = GhostStatus.ACTIVE if enabled else GhostStatus.DISABLED
    ghost.status_reason = reason
    ghost.save(update_fields=["enabled", "status", "status_reason", "updated_at"])
    audit_record(
        actor=actor,
        action="ghost.enabled" if enabled else "ghost.disabled",
        obj=ghost,
        reason=reason,
        before=before,
        after=_state(ghost),
        data_time=data_time,
    )
    send_on_commit(
        GHOSTS_GROUP, ghost_payload(ghost, type_="ghost.toggled", actor=getattr(actor, "username", "system"))
    )
    return ghost


@transaction.atomic
def ghost_record_evaluation(*, ghost_id: int, error: str | None, state: dict[str, str] | None = None) -> Ghost:
    """After each evaluation: a raised error marks the ghost degraded (traceback kept), a clean run heals it.

    `state` is the engine's summary of the ghost's view (trend, CVD, last cascade...); browsers get it
    with the status whenever it changes.
    """
    ghost = Ghost.objects.select_for_update().get(pk=ghost_id)
    if not ghost.enabled:
        return ghost
    before = _state(ghost)
    fields = []
    pairs = None if state is None else [[str(k), str(v)] for k, v in state.items()]  # ordered (Ghost.state)
    if pairs is not None and pairs != ghost.state:
        ghost.state = pairs
        fields.append("state")
    if error and is_plugin(ghost.kind):
        return _plugin_disable(ghost, error)
    if error:
        ghost.status = GhostStatus.DEGRADED
        ghost.status_reason = error.strip().splitlines()[-1][:300] if error.strip() else "error"
        ghost.last_error = error
        fields += ["status", "status_reason", "last_error"]
    elif ghost.status == GhostStatus.DEGRADED:
        ghost.status = GhostStatus.ACTIVE
        ghost.status_reason = "recovered: evaluated cleanly"
        fields += ["status", "status_reason"]
    if not fields:
        return ghost
    ghost.save(update_fields=[*fields, "updated_at"])
    if before["status"] != ghost.status:
        audit_record(
            actor=None,
            action=f"ghost.{ghost.status}",
            obj=ghost,
            reason=ghost.status_reason,
            before=before,
            after=_state(ghost),
        )
    send_on_commit(GHOSTS_GROUP, ghost_payload(ghost, type_="ghost.status", actor="system"))
    return ghost


def _plugin_disable(ghost: Ghost, error: str) -> Ghost:
    """A plug-in ghost that raised or returned bad drafts (apps.engine.plugins.checked_evaluate) is DISABLED, not
    degraded: its code is not the desk's, so it stays off until an operator has read the traceback (in the audit
    log and on the ghost) and enables it again with a reason. An alert says so (the auto-disable channel)."""
    from apps.alerts.services import alert_emit

    last = error.strip().splitlines()[-1][:300] if error.strip() else "error"
    reason = f"plug-in disabled at run time: {last}"[:500]
    before = _state(ghost)
    ghost.enabled, ghost.status, ghost.status_reason, ghost.last_error = False, GhostStatus.DISABLED, reason, error
    ghost.save(update_fields=["enabled", "status", "status_reason", "last_error", "state", "updated_at"])
    audit_record(actor=None, action="ghost.plugin_disabled", obj=ghost, reason=reason, before=before,
                 after={**_state(ghost), "traceback": error[-8000:]})
    send_on_commit(GHOSTS_GROUP, ghost_payload(ghost, type_="ghost.toggled", actor="system"))
    alert_emit(kind="auto_disable", title=f"{ghost.name} (plug-in {ghost.kind}) disabled",
               body=f"{reason}\n\n{error[-3000:]}",
               data={"ghost_id": ghost.pk, "ghost": ghost.name, "kind": ghost.kind, "reason": reason})
    return ghost


@transaction.atomic
def plugin_ghosts_ensure(*, instrument: Instrument, suffix: str) -> list[Ghost]:
    """One ghost per registered desk plug-in kind on `instrument` that has none yet, named <kind>-<suffix> and
    DISABLED (new code trades only once an operator enables it, with a reason). Returns the ghosts created."""
    from apps.engine.registry import GHOSTS

    present = set(Ghost.objects.filter(instrument=instrument).values_list("kind", flat=True))
    made = []
    for kind, spec in GHOSTS.items():
        name = f"{kind.replace('_', '-')}-{suffix}"[:64]
        if is_plugin(kind) and spec.desk and kind not in present and not Ghost.objects.filter(name=name).exists():
            made.append(ghost_create(name=name, kind=kind, instrument=instrument, enabled=False))
    return made


@transaction.atomic
def ghost_update_params(*, ghost_id: int, params: dict, actor, reason: str, source: dict | None = None) -> Ghost:
    """Replace a ghost's params after the engine's config validation; a refused value saves nothing.

    Stored normalised (`to_params`), so the next evaluation reads exactly what was validated. `source` is where
    the params came from (`Ghost.params_source`: a study's trial, set by `apps.research.services.study_apply`);
    any other change clears it, so the Ghosts page never credits a study with params someone edited since.
    """
    from apps.engine.types import ConfigError

    reason = (reason or "").strip()
    if not reason:
        raise GhostError("a reason is required")
    if not isinstance(params, dict):
        raise GhostError("params must be a JSON object")
    ghost = Ghost.objects.select_for_update().get(pk=ghost_id)
    try:
        cfg = config_from_params(ghost.kind, params)
    except ConfigError as e:
        raise GhostError(str(e)) from None
    before, after = dict(ghost.params), cfg.to_params()
    if before == after and ghost.params_source == source:
        return ghost
    ghost.params, ghost.params_source = after, source
    ghost.save(update_fields=["params", "params_source", "updated_at"])
    audit_record(actor=actor, action="ghost.params_changed", obj=ghost, reason=reason[:500],
                 before=before, after=after if source is None else {**after, "params_source": source})
    return ghost


@transaction.atomic
def ghost_update_auto_disable(*, ghost_id: int, params: dict, actor, reason: str) -> Ghost:
    """Replace a ghost's auto-disable rules after the engine's validation (AutoDisableRules); a refused value
    saves nothing. Stored normalised (every field, `to_params`), so `ghost_review` judges exactly what the
    operator saw; the audit row holds the effective rules before (defaults filled in) and after."""
    from apps.engine.performance import AutoDisableRules
    from apps.engine.types import ConfigError

    reason = (reason or "").strip()
    if not reason:
        raise GhostError("a reason is required")
    if len(reason) > 500:
        raise GhostError("reason is too long (max 500 characters)")
    if not isinstance(params, dict):
        raise GhostError("auto-disable rules must be a JSON object")
    ghost = Ghost.objects.select_for_update().get(pk=ghost_id)  # DoesNotExist -> 404 in views
    try:
        after = AutoDisableRules.from_params(params).to_params()
    except ConfigError as e:
        raise GhostError(str(e)) from None
    try:
        before = AutoDisableRules.from_params(ghost.auto_disable).to_params()
    except ConfigError:  # a row written before validation existed: show what was stored
        before = dict(ghost.auto_disable)
    if ghost.auto_disable == after:
        return ghost
    ghost.auto_disable = after
    ghost.save(update_fields=["auto_disable", "updated_at"])
    audit_record(actor=actor, action="ghost.auto_disable_changed", obj=ghost, reason=reason,
                 before=before, after=after)
    return ghost


# -- ghost instances from the Instruments page (issue 11) ----------------------------------------------------
GHOST_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")


@transaction.atomic
def ghost_instance_create(*, name: str, kind: str, instrument_id: int, params: dict | None, actor) -> Ghost:
    """A new ghost of a registered desk kind (built-in or plug-in) on an instrument, with params the engine's
    config validates. Created DISABLED: it trades once an operator enables it on the Ghosts page, with a reason.
    GhostError (fit for the operator) on a bad name, kind, instrument or param."""
    from apps.engine.registry import GHOSTS
    from apps.engine.types import ConfigError

    name = (name or "").strip().lower()
    if not name or len(name) > 64 or not set(name) <= GHOST_NAME_CHARS or name.startswith("-"):
        raise GhostError("name: 1 to 64 lower-case letters, digits and hyphens (e.g. trend-filter-eth)")
    spec = GHOSTS.get(kind)
    if spec is None or not spec.desk:
        kinds = ", ".join(k for k, s in GHOSTS.items() if s.desk)
        raise GhostError(f"kind {kind!r} is not a desk ghost; choose one of {kinds}")
    if not isinstance(params, dict):
        raise GhostError("parameters must be a JSON object, e.g. {\"spike_threshold_pct\": 0.8}")
    # locked: a create racing the instrument's delete (apps.dashboard.instrument_delete) waits for it, then finds none
    instrument = Instrument.objects.select_for_update().filter(pk=instrument_id).first()
    if instrument is None:
        raise GhostError("no such instrument")
    if Ghost.objects.filter(name=name).exists():
        raise GhostError(f"a ghost named {name} exists already")
    try:
        return ghost_create(name=name, kind=kind, instrument=instrument, params=params, enabled=False, actor=actor)
    except (ConfigError, ValueError, TypeError) as exc:
        raise GhostError(f"parameters refused by {kind}'s config: {exc}") from exc


@transaction.atomic
def ghost_delete(*, ghost_id: int, actor, reason: str = "") -> dict:
    """Delete a DISABLED ghost that never traded (no position): a ghost with trades stays, its ledger names it.
    Its signals (all refused or skipped, since none became a position) and targets go with it; the audit row
    keeps what it was. Returns what was deleted."""
    ghost = Ghost.objects.select_for_update().select_related("instrument").get(pk=ghost_id)  # DoesNotExist -> 404
    trades = ghost.positions.count()
    if trades:
        raise GhostError(f"{ghost.name} has {trades} trade{'s' if trades != 1 else ''}: a ghost with trades is "
                         "kept (disable it instead)")
    if ghost.enabled:
        raise GhostError(f"{ghost.name} is enabled: disable it first (with a reason), then delete it")
    gone = {"name": ghost.name, "kind": ghost.kind, "instrument": str(ghost.instrument), "params": ghost.params,
            "signals": ghost.signals.count()}
    audit_record(actor=actor, action="ghost.deleted", obj=ghost, reason=(reason or "").strip()[:500],
                 before={**_state(ghost), **gone})
    ghost.delete()
    return gone

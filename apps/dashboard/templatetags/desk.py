"""Number formatting for the desk: every figure with a fixed precision, a sign where it is P&L, never NaN."""

import math
from decimal import Decimal, InvalidOperation

from django import template

from apps.common.display import state_value as _state_value

register = template.Library()

Number = Decimal | float | int | str | None


def _dec(value: Number) -> Decimal | None:
    """Decimal or None for anything that is not a finite number (None, "", NaN, inf, garbage)."""
    if value is None or value == "":
        return None
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        return None
    return d if d.is_finite() else None


@register.filter
def money(value: Number, places: int = 2) -> str:
    """1234.5 -> "1,234.50"; a missing or non-finite value -> an em dash rather than "NaN"."""
    d = _dec(value)
    return "—" if d is None else f"{d:,.{int(places)}f}"


@register.filter
def signed_money(value: Number) -> str:
    """P&L with an explicit sign: "+12.30", "−4.00" (a true minus sign, which lines up in monospace)."""
    d = _dec(value)
    if d is None:
        return "—"
    d = d.quantize(Decimal("0.01"))
    if d == 0:
        return "0.00"
    return f"+{d:,.2f}" if d > 0 else f"−{-d:,.2f}"


@register.filter
def pnl_class(value: Number) -> str:
    """CSS class by sign so P&L reads at a glance (not by colour alone: the sign is printed too)."""
    d = _dec(value)
    if d is None or d.quantize(Decimal("0.01")) == 0:
        return "flat"
    return "pos" if d > 0 else "neg"


@register.filter
def price(value: Number) -> str:
    """Prices with precision by magnitude: BTC to the cent, sub-dollar alts to 6 significant decimals."""
    d = _dec(value)
    if d is None:
        return "—"
    a = abs(d)
    places = 2 if a >= 1000 else 4 if a >= 1 else 8
    return f"{d:,.{places}f}"


@register.filter
def qty(value: Number) -> str:
    """Base quantities: up to 8 decimals, trailing zeros trimmed."""
    d = _dec(value)
    if d is None:
        return "—"
    text = f"{d:,.8f}".rstrip("0").rstrip(".")
    return text or "0"


@register.filter
def pct(value: Number, places: int = 1) -> str:
    """A percentage that is already ×100; None (no target, no sample) -> an em dash, never "NaN%"."""
    if value is None:
        return "—"
    try:
        f = float(value)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(f):
        return "—"
    return f"{f:.{int(places)}f}%".replace("-", "−")  # the true minus sign, as for money


@register.filter
def confidence_pct(value: Number) -> str:
    """Engine confidence 0..1 as a whole percentage."""
    d = _dec(value)
    return "—" if d is None else f"{d * 100:.0f}%"


@register.filter
def css_width(value: Number) -> str:
    """A progress width for an inline style: clamped 0..100, dot decimal whatever the locale."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return "0"
    if not math.isfinite(f):
        return "0"
    return f"{max(0.0, min(100.0, f)):.1f}"


@register.filter
def source_label(source: str | None, exchange: str | None = None) -> str:
    """FeedStatus.source -> the badge text: "sim" -> SIM, "replay:<path>[@speed]" -> REPLAY <file> @speed,
    "live" -> LIVE <exchange> (the exchange name is the filter's argument)."""
    s = (source or "").strip()
    low = s.lower()
    if low.startswith("replay"):
        body = s.partition(":")[2]
        body, at, speed = body.rpartition("@") if "@" in body else (body, "", "")
        names = ", ".join(t.strip() if t.strip().startswith("db:") else t.strip().rsplit("/", 1)[-1]
                          for t in body.split(",") if t.strip())
        speed = "max" if speed.strip().lower() in ("0", "max") else speed.strip()
        return " ".join(x for x in ("REPLAY", names, f"@{speed}" if at else "") if x)
    if low.startswith("sim"):
        return "SIM"
    if low.startswith("live") or low.startswith("ccxt"):
        return f"LIVE {exchange}" if exchange else "LIVE"
    return s.upper() or "—"


@register.filter
def rejected_summary(counts: dict | None) -> str:
    """FeedStatus.rejected -> "price_band 3 · future 1" (largest first); "" when nothing was rejected."""
    items = sorted((counts or {}).items(), key=lambda kv: (-int(kv[1]), kv[0]))
    return " · ".join(f"{k} {int(v):,}" for k, v in items if int(v))


@register.filter
def feed_class(state: str | None) -> str:
    """Feed state -> colour class: connected is calm, transitions warn, errors are loud. "down" (the runner's
    heartbeat lapsed, apps.market.selectors) is red: nothing is coming and nothing is retrying. desk.js feedClass
    says the same."""
    if not state:
        return "off"
    if state == "connected":
        return "ok"
    if state in ("error", "stopped", "down"):
        return "bad"
    return "warn"


@register.filter
def status_class(status: str | None) -> str:
    return {"active": "ok", "degraded": "warn", "disabled": "off"}.get(status or "", "off")


@register.filter
def get_item(mapping: dict | None, key: object) -> object:
    """mapping[key] in a template (e.g. the inline error of one ghost row); None when absent."""
    return (mapping or {}).get(key)


@register.filter
def audit_diff(event: object) -> list[tuple[str, str, str]]:
    """(key, before, after) for every key in either side, so a change reads "status: active → disabled"."""
    before = getattr(event, "before", None) or {}
    after = getattr(event, "after", None) or {}
    keys = list(before) + [k for k in after if k not in before]

    def show(side: dict, k: str) -> str:
        return "—" if k not in side else str(side[k]).lower() if isinstance(side[k], bool) else str(side[k])

    return [(k, show(before, k), show(after, k)) for k in keys]


@register.filter
def fate_label(fate: str | None) -> str:
    """ "blocked_trend" -> "blocked trend": the same words desk.js writes for live updates."""
    return (fate or "").replace("_", " ")


@register.filter
def pretty_json(value) -> str:
    """Ghost params for the editor: indented, keys sorted (autoescaped by the template)."""
    import json

    return json.dumps(value, indent=2, sort_keys=True)


@register.filter
def state_value(value: object) -> str:
    """A ghost's state summary value for display: times as "MM-DD HH:MM" (data time, UTC), plain numbers with
    thousands separators (`apps.common.display.state_value`, the same helper the pushed payload uses)."""
    return _state_value(value)

"""Ghost registry: kind -> how to build its config and evaluate it, in one table.

The Django side stores a ghost as (kind, params JSON); everything it needs to validate the params,
size the live window and produce the latest draft goes through here, so adding a ghost is one entry.
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from apps.engine import cvd, liquidation_hunter, spike_fader, textbook, trend, whale_follower
from apps.engine.types import ConfigError, Draft, GhostConfig


@dataclasses.dataclass(frozen=True)
class GhostSpec:
    """kind: registry key (Ghost.kind); title: human name; config_cls: frozen GhostConfig dataclass;
    evaluate: causal fn(bars, config) -> drafts frame; warmup_minutes: bars of history the live window
    needs with DEFAULT params (use `warmup_minutes_for` for a given config); summary: optional
    fn(bars, config) -> {label: text}, the ghost's current state for the ghosts page; desk: False for a LAB
    ghost (runnable in backtests and the lab, never created on the desk by `desk_ensure` nor in
    `backtest.default_ghosts()`); inputs: fn(config) -> the bar inputs beyond OHLCV it cannot draft without (keys
    of INPUTS; use `inputs_for`): on bars where one is unknown (NaN) the ghost is idle, so the lab says so before a
    run."""

    kind: str
    title: str
    config_cls: type[GhostConfig]
    evaluate: Callable[[pd.DataFrame, Any], pd.DataFrame]
    warmup_minutes: int
    summary: Callable[[pd.DataFrame, Any], dict[str, str]] | None = None
    desk: bool = True
    inputs: Callable[[Any], tuple[str, ...]] = lambda cfg: ()


# The bar inputs beyond OHLCV a ghost may need, by the names the lab's data coverage counts them under
# (apps.lab.selectors.data_coverage): unknown (NaN) wherever the source does not carry them (apps.engine.types).
INPUTS: dict[str, tuple[str, ...]] = {
    "taker": ("taker_buy_volume", "taker_sell_volume"),  # klines with a taker split, or trades
    "whale": ("whale_buy_volume", "whale_sell_volume"),  # built from trade prints: kline-only history has none
    "liq": ("liq_long_volume", "liq_short_volume"),  # a liquidation (forceOrder) recording
}


GHOSTS: dict[str, GhostSpec] = {
    "spike_fader": GhostSpec(
        kind="spike_fader",
        title="Volatility spike fader",
        config_cls=spike_fader.SpikeFaderConfig,
        evaluate=spike_fader.evaluate,
        warmup_minutes=spike_fader.SpikeFaderConfig().warmup_minutes,
        summary=spike_fader.state_summary,
    ),
    "cvd_detector": GhostSpec(
        kind="cvd_detector",
        title="CVD detector",
        config_cls=cvd.CvdConfig,
        evaluate=cvd.evaluate,
        warmup_minutes=cvd.CvdConfig().warmup_minutes,
        summary=cvd.state_summary,
        inputs=lambda cfg: ("taker",),  # it reads the taker split
    ),
    "trend_filter": GhostSpec(
        kind="trend_filter",
        title="Multi-timeframe trend filter",
        config_cls=trend.TrendConfig,
        evaluate=trend.evaluate,
        warmup_minutes=trend.TrendConfig().warmup_minutes,
        summary=trend.state_summary,
    ),
    "whale_follower": GhostSpec(
        kind="whale_follower",
        title="Whale follower",
        config_cls=whale_follower.WhaleFollowerConfig,
        evaluate=whale_follower.evaluate,
        warmup_minutes=whale_follower.WhaleFollowerConfig().warmup_minutes,
        summary=whale_follower.state_summary,
        inputs=lambda cfg: ("whale", "taker"),  # whale volumes AND a CVD that agrees
    ),
    "liquidation_hunter": GhostSpec(
        kind="liquidation_hunter",
        title="Liquidation hunter v2",
        config_cls=liquidation_hunter.LiquidationHunterConfig,
        evaluate=liquidation_hunter.evaluate,
        warmup_minutes=liquidation_hunter.LiquidationHunterConfig().warmup_minutes,
        summary=liquidation_hunter.state_summary,
        # the taker split only with require_cvd (without it, signals fire without the CVD bonus)
        inputs=lambda cfg: ("liq", "taker") if cfg.require_cvd else ("liq",),
    ),
    "textbook_fader": GhostSpec(
        kind="textbook_fader",
        title="Textbook fader (lab)",
        config_cls=textbook.TextbookFaderConfig,
        evaluate=textbook.evaluate,
        warmup_minutes=textbook.TextbookFaderConfig().warmup_minutes,
        summary=textbook.state_summary,
        desk=False,
    ),
}
# The kinds the desk runs (one ghost each on a fresh desk); GHOSTS also holds the lab-only kinds.
DESK_KINDS: tuple[str, ...] = tuple(kind for kind, spec in GHOSTS.items() if spec.desk)
# The built-in kinds; anything else in GHOSTS is a plug-in (issue 11), registered by apps.ghosts.plugins after
# apps.engine.plugins' guards passed. Plug-ins are not in DESK_KINDS: the desk's default set, the default
# backtest and the desk-wide search space stay the built-in five whatever folder a process loads.
BUILTIN_KINDS: frozenset[str] = frozenset(GHOSTS)


def register(spec: GhostSpec) -> None:
    """Add a plug-in's spec (validated by the caller: apps.engine.plugins.check_spec); ConfigError on a taken kind."""
    if spec.kind in GHOSTS:
        raise ConfigError(f"ghost kind {spec.kind!r} is already registered")
    GHOSTS[spec.kind] = spec


def unregister(kind: str) -> None:
    """Remove a plug-in's kind (a reload of the plug-in folder); built-in kinds cannot be removed."""
    if kind in BUILTIN_KINDS:
        raise ConfigError(f"{kind!r} is a built-in ghost kind")
    GHOSTS.pop(kind, None)


def is_plugin(kind: str) -> bool:
    """True for a registered kind that is not built in."""
    return kind in GHOSTS and kind not in BUILTIN_KINDS


def get_spec(kind: str) -> GhostSpec:
    """The spec for `kind`, or ConfigError naming the known kinds."""
    try:
        return GHOSTS[kind]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown ghost kind {kind!r}; known kinds: {', '.join(sorted(GHOSTS))}") from None


def config_from_params(kind: str, params: Mapping[str, Any] | None) -> GhostConfig:
    """Validated, frozen config for `kind` from stored params (ConfigError with a clear message)."""
    return get_spec(kind).config_cls.from_params(params)


def _config(kind: str, params_or_config: Mapping[str, Any] | GhostConfig | None) -> GhostConfig:
    spec = get_spec(kind)
    if isinstance(params_or_config, spec.config_cls):
        return params_or_config
    if params_or_config is None or isinstance(params_or_config, Mapping):
        return spec.config_cls.from_params(params_or_config)
    raise ConfigError(f"{kind} needs a params mapping or a {spec.config_cls.__name__}, "
                      f"got {type(params_or_config).__name__}")


def warmup_minutes_for(kind: str, params_or_config: Mapping[str, Any] | GhostConfig | None = None) -> int:
    """Minutes of bars the live loader should hand `latest_draft` for this ghost's actual params."""
    cfg = _config(kind, params_or_config)
    return int(getattr(cfg, "warmup_minutes", get_spec(kind).warmup_minutes))


def inputs_for(kind: str, params_or_config: Mapping[str, Any] | GhostConfig | None = None) -> tuple[str, ...]:
    """The inputs (INPUTS keys) this ghost, with these params, cannot draft without; ConfigError on bad params."""
    return get_spec(kind).inputs(_config(kind, params_or_config))


def latest_draft(kind: str, params_or_config: Mapping[str, Any] | GhostConfig | None,
                 bars: pd.DataFrame) -> Draft | None:
    """Evaluate the ghost on the live window and return the LAST bar's draft, None when it is idle.

    Live and backtest use the same `evaluate`; given at least `warmup_minutes_for(kind, ...)` bars of
    history, the result equals the full-history evaluation at that bar (tests/engine check it).
    """
    cfg = _config(kind, params_or_config)
    drafts = get_spec(kind).evaluate(bars, cfg)
    if len(drafts) == 0:
        return None
    row = drafts.iloc[-1]
    if int(row["side"]) == 0:
        return None
    return Draft.from_row(drafts.index[-1], row)

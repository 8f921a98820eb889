"""The what-if forecast step of publishing: recent events → curve fit → forecast of the candidate vs the live policy
→ `forecast.csv` and `forecast.png` beside the candidate, the same in MLflow (champion's run), and the guardrail
on projected conversions and reach (`freqcap.domain.forecast`). Settings: `publish.forecast.*`."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb

from freqcap.adapters.duckdb.curve_events import load_event_arrays
from freqcap.adapters.events_files import parquet_glob
from freqcap.adapters.mlflow.forecast import log_forecast
from freqcap.adapters.reports.forecast import plot_forecast
from freqcap.config import Settings, parse_duration
from freqcap.domain.curves import FloorSpec, fit_config_from_features, fit_curves
from freqcap.domain.forecast.guardrail import ForecastLimits, check_forecast
from freqcap.domain.forecast.project import ForecastParams, forecast_policies
from freqcap.domain.policy import Policy
from freqcap.domain.policy.guardrails import Check
from freqcap.jobs.features import events_dir_for
from freqcap.jobs.privacy import pseudonymous_events
from freqcap.layout import DataLayout, parse_as_of

log = logging.getLogger(__name__)
US = 1_000_000


def _longest_cap_seconds(*policies: Policy | None) -> int:
    caps = [c.window_seconds for p in policies if p is not None for r in (*p.defaults, *p.rules) for c in r.caps]
    return max(caps, default=0)


def forecast_for_publish(
    proposed: Policy, live: Policy | None, candidate: dict[str, Any], settings: Settings, skip: str | None = None
) -> tuple[Check, dict[str, Any]]:
    """(guardrail check, summary for the report and the task's return value); skipped, and saying why, with a
    `skip` reason from the caller, without a live policy, with `publish.forecast.enabled` off, or without events."""
    cfg = settings.publish.forecast
    limits = ForecastLimits(cfg.max_conversion_drop, cfg.max_reach_drop)

    def skipped(reason: str) -> tuple[Check, dict[str, Any]]:
        log.info("forecast skipped: %s", reason)
        return check_forecast(None, limits, reason=reason), {"skipped": reason}

    if skip:
        return skipped(skip)
    if not cfg.enabled:
        return skipped("publish.forecast.enabled is false")
    if live is None:
        return skipped("no live policy: first publication")
    events_dir = Path(events_dir_for(settings))
    if not events_dir.exists() or not any(events_dir.rglob("*.parquet")):
        return skipped(f"no events under {events_dir.name}/ to replay")
    events, users = pseudonymous_events(settings, events_dir)
    newest = duckdb.sql(f"SELECT max(event_ts) FROM read_parquet('{parquet_glob(events)}')").fetchall()[0][0]
    end = parse_as_of(newest)
    period = parse_duration(cfg.period)
    features = settings.features
    longest_feature = max(t.window_seconds[t.longest_window] for t in features.tiers)
    history = timedelta(seconds=max(_longest_cap_seconds(proposed, live), longest_feature))
    start = end - period
    ev, _ = load_event_arrays(
        events, users, since=start - history, threads=features.threads, memory_limit=features.memory_limit
    )
    fit_cfg = fit_config_from_features(
        features,
        floor=FloorSpec("relative", settings.training.floor),
        attribution_window=cfg.attribution_window,
        maturity_share=settings.training.maturity_share,
    )
    fit = fit_curves(ev, fit_cfg)
    params = ForecastParams(
        bootstrap=cfg.bootstrap,
        confidence=cfg.confidence,
        signal_lookback_us=int(parse_duration(features.signal_lookback).total_seconds() * US),
        longest_window_us=int(longest_feature * US),
    )
    table = forecast_policies(ev, fit, live, proposed, int(start.timestamp() * US), params)
    policy_path = Path(candidate["policy_path"])
    table_path = DataLayout.forecast_table(policy_path)
    table.to_csv(table_path, index=False)
    plot_path = plot_forecast(
        table, DataLayout.forecast_plot(policy_path), title=f"{live.version} → {proposed.version}"
    )
    metrics = log_forecast(settings, candidate["run_id"], table, [table_path, plot_path])
    check = check_forecast(table, limits)
    headline = _headline(table)
    for line in headline:
        log.info("forecast %s", line)
    summary = {
        "period": {"start": start.isoformat(), "end": end.isoformat()},
        "impressions_in_period": int((ev.imp_ts >= int(start.timestamp() * US)).sum()),
        "table": str(table_path),
        "plot": str(plot_path),
        "mlflow_metrics": metrics,
        "headline": headline,
    }
    return check, summary


def _headline(table) -> list[str]:
    """One line per metric and level for everyone: live → candidate (change, interval) — the task summary."""
    lines = []
    everyone = table[table["cohort"] == "all"]
    for _, r in everyone.iterrows():
        fmt = "{:.1%}" if r["metric"] == "past_cap_share" else "{:,.0f}"
        change = f"{r['change_pct']:+.1%}" if r["metric"] != "past_cap_share" else f"{r['change']:+.1%}"
        lines.append(
            f"{r['metric']}/{r['level']}: {fmt.format(r['live'])} → {fmt.format(r['candidate'])} ({change}; "
            f"interval {fmt.format(r['low'])}–{fmt.format(r['high'])})"
        )
    return lines

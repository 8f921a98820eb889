"""Shared by the monitoring tests: synthetic decision logs, small simulated worlds (plain and with drift
injected), and a training-set-shaped reference."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from freqcap.adapters.simulation_files import load_ground_truth, simulate_to_dir
from freqcap.config import SimulationConfig
from freqcap.domain.events import AUDIENCES, SIGNAL_TIERS
from freqcap.domain.simulate.params import DEFAULT_AUDIENCES, ModelParams
from freqcap.layout import parse_as_of

T0 = datetime(2026, 10, 4, 0, 0, tzinfo=UTC)
FORMATS = ("feed", "stories", "reels")
LEVELS = ("advertiser", "campaign", "ad")


def log_row(
    ts: datetime,
    rng: random.Random,
    *,
    fail_open: bool = False,
    reason: str | None = None,
    audience: str | None = None,
    hit_rate: float = 0.3,
) -> dict:
    """One decision-log line as serving writes it (fields of freqcap.adapters.decision_log.FIELDS)."""
    base = {
        "ts": ts.isoformat(),
        "date": ts.date().isoformat(),
        "hour": ts.hour,
        "format": rng.choice(FORMATS),
        "policy_version": "p1",
        "ad_id": f"ad{rng.randrange(9)}",
        "campaign_id": "c1",
        "advertiser_id": "v1",
    }
    if fail_open:
        return {
            **base,
            "audience": None,
            "signal_tier": None,
            "level": None,
            "binding_kind": None,
            "window": None,
            "cap": None,
            "count": None,
            "distance_to_cap": None,
            "penalty": 1.0,
            "eligible": True,
            "hit": False,
            "degraded": True,
            "degraded_reason": reason or "timeout",
            "fail_open": True,
        }
    level = rng.choice((*LEVELS, None))
    hit = level is not None and rng.random() < hit_rate
    return {**base, "audience": audience or rng.choice(AUDIENCES), "signal_tier": rng.choice(SIGNAL_TIERS),
            "level": level, "binding_kind": "cap" if level else None, "window": "7d" if level else None,
            "cap": 3 if level else None, "count": (3 if hit else 1) if level else None,
            "distance_to_cap": (0 if hit else 2) if level else None, "penalty": 0.5 if hit else 1.0,
            "eligible": True, "hit": hit, "degraded": reason is not None, "degraded_reason": reason,
            "fail_open": False}  # fmt: skip


def write_log(directory: Path, rows: list[dict], part: str = "part-0") -> None:
    """Rows into date partitions, one JSON line each (like serving's flusher)."""
    by_date: dict[str, list[dict]] = {}
    for r in rows:
        by_date.setdefault(r["date"], []).append(r)
    for date, items in by_date.items():
        d = directory / f"date={date}"
        d.mkdir(parents=True, exist_ok=True)
        with (d / f"{part}.jsonl").open("a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in items)


def shifted_params() -> ModelParams:
    """Drift injected: the audience mix moves from 50% cold / 15% high-intent to 10% cold / 55% high-intent."""
    audiences = dict(DEFAULT_AUDIENCES)
    audiences["cold"] = audiences["cold"].model_copy(update={"share": 0.10})
    audiences["high_intent"] = audiences["high_intent"].model_copy(update={"share": 0.55})
    return ModelParams(audiences=audiences)


def simulate_world(out: Path, seed: int, *, shifted: bool = False, users: int = 2000, days: int = 3):
    """(events_dir, users.parquet, end of the simulated window)."""
    summary = simulate_to_dir(out, SimulationConfig(users=users, days=days, seed=seed),
                              params=shifted_params() if shifted else None)  # fmt: skip
    return summary.events_dir, summary.users_path, parse_as_of(load_ground_truth(out)["window"]["end"])


def write_reference(settings, events_dir: Path, users_path: Path, end: datetime) -> Path:
    """The last 24h of a world in training-set shape (the exposure and context columns the training set computes
    with the same code), where the monitoring job looks for the newest training set."""
    from freqcap.adapters.duckdb.current_rows import current_rows
    from freqcap.domain.training.config import load_model_config

    config = load_model_config(settings.training.model_config_path)
    rows, _ = current_rows(events_dir, users_path, end - timedelta(days=1), end, settings, config)
    path = (
        settings.data_dir.resolve() / "training" / config.name / end.strftime("%Y%m%dT%H%M%SZ") / "training_set.parquet"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(path, index=False)
    return path

"""`fit_curves_to_dir(events_dir, out_dir, ...)` — what `freqcap curves fit` and the training DAG run.

Reads events (+ users.parquet) with DuckDB, fits with `freqcap.domain.curves.core.fit_curves`, and writes:

- `curves.parquet`: cohort, level, n, rate, ci_low, ci_high, support, then rate_smooth, ci_low_smooth,
  ci_high_smooth, ratio, first_rate, conversions, entry_conversions, naive_rate, the variance terms of log rate,
  kind, fallback, source, ...; cohorts' rate and CI after shrinkage towards their audience, their own estimates
  in rate_own, ci_low_own, ci_high_own and the audience's weight in shrinkage (`freqcap.domain.curves.shrink`).
  One curve per cohort (`audience/tier`), audience (`audience/all`) and everyone (`all`) × level; a cohort
  that fell back carries its parent's curve with `fallback` = audience/global and `source` = the parent.
- `caps.parquet` and `caps.csv`: cohort, level, cap, floor, support, fallback, reason, then kind, window,
  floor_kind, floor_rate, first_rate, censored, cap_low, cap_high, cap_naive, n_max, ...
- `plots/<cohort>.png`, one per cohort label;
- `policy.yaml`: the proposed policy (valid under `freqcap.domain.policy.parse_policy`);
- `summary.json`: counts, timings, the fitted delay density and notes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from freqcap.adapters.duckdb.curve_events import load_event_arrays
from freqcap.adapters.reports.curves import plot_all
from freqcap.config import FeaturesConfig, load_settings
from freqcap.domain.curves.caps import FloorKind, FloorSpec
from freqcap.domain.curves.core import fit_config_from_features, fit_curves
from freqcap.domain.curves.estimate import EstimatorParams
from freqcap.domain.curves.policy import PenaltyShape, build_policy
from freqcap.domain.policy import dump_policy
from freqcap.layout import users_path_for

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
_US = 1_000_000


@dataclass(frozen=True)
class CurveFitSummary:
    out_dir: Path
    paths: dict[str, Path]
    impressions: int
    mature_impressions: int
    conversions: int
    conversions_credited: float
    attribution: str
    cohorts: int  # cohort × level pairs with a cap row
    own_curves: int  # of those, fitted on their own data
    fallbacks: int
    censored: int
    policy_version: str
    floor: float
    floor_kind: str
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["out_dir"] = str(self.out_dir)
        out["paths"] = {k: str(v) for k, v in self.paths.items()}
        return out


def fit_curves_to_dir(
    events_dir: Path,
    out_dir: Path,
    *,
    floor: float = 0.5,
    floor_kind: FloorKind = "relative",
    users: Path | None = None,
    cost_per_impression: float | None = None,
    value_per_conversion: float | None = None,
    attribution_window: str = "7d",
    attribution: Literal["deconvolved", "last_touch"] = "deconvolved",
    features: FeaturesConfig | None = None,
    estimator: EstimatorParams | None = None,
    min_cohort_support: int = 300,
    min_cohort_conversions: float = 30.0,
    data_end: datetime | None = None,
    maturity_share: float | None = None,
    deduplicate: bool = True,
    plots: bool = True,
    created_at: datetime | None = None,
    penalty_shape: PenaltyShape | None = None,
) -> CurveFitSummary:
    """Fit exposure–response curves per cohort × level from an events directory and write curves, caps, plots
    and a proposed policy to `out_dir` (see the module docstring). `floor` is R for a relative floor, a rate
    for an absolute one; an economic floor uses `cost_per_impression` / `value_per_conversion` (default: the
    mean conversion value in the data). `maturity_share` defaults to `training.maturity_share`, `penalty_shape`
    (the proposed policy's soft penalty: `freqcap.domain.curves.policy`) to `training.penalty_shape`."""
    started = time.perf_counter()
    events_dir, out_dir = Path(events_dir), Path(out_dir)
    if features is None or maturity_share is None or penalty_shape is None:
        settings = load_settings()
        features = features or settings.features
        maturity_share = settings.training.maturity_share if maturity_share is None else maturity_share
        penalty_shape = penalty_shape or settings.training.penalty_shape
    spec = FloorSpec(floor_kind, floor, cost_per_impression, value_per_conversion)
    cfg = fit_config_from_features(
        features,
        floor=spec,
        attribution_window=attribution_window,
        attribution=attribution,
        estimator=estimator,
        min_cohort_support=min_cohort_support,
        min_cohort_conversions=min_cohort_conversions,
        maturity_share=maturity_share,
    )
    ev, report, users_path = _load_events(events_dir, users, features, deduplicate, data_end)
    loaded = time.perf_counter()
    log.info(
        "loaded %d impressions, %d clicks, %d conversions, %d users in %.1fs",
        ev.n_impressions,
        len(ev.click_ts),
        len(ev.conv_ts),
        ev.n_users,
        loaded - started,
    )
    fit = fit_curves(ev, cfg)
    notes = list(fit.notes)
    if users_path is None:
        notes.append("no users.parquet: every user is in audience 'unknown'")
    if report.rows_skipped:
        notes.append(f"{report.rows_skipped} event rows skipped (missing key or unknown event_type)")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["curves"] = out_dir / "curves.parquet"
    fit.published.to_parquet(paths["curves"], index=False)
    paths["caps"] = out_dir / "caps.parquet"
    fit.caps.to_parquet(paths["caps"], index=False)
    paths["caps_csv"] = out_dir / "caps.csv"
    fit.caps.to_csv(paths["caps_csv"], index=False)
    t_plots = time.perf_counter()
    if plots:
        plot_paths = plot_all(fit.published, fit.caps, out_dir / "plots")
        paths["plots"] = out_dir / "plots"
        log.info("wrote %d plots", len(plot_paths))
    t_policy = time.perf_counter()
    source = {
        "generator": "freqcap curves fit",
        "events": str(events_dir),
        "floor": spec.label,
        "attribution": fit.credit.method,
        "attribution_window": attribution_window,
        "maturity_share": maturity_share,
        "count": "impressions of one entity to one user within the level's longest feature window",
    }
    source["penalty_shape"] = penalty_shape
    policy = build_policy(
        fit.caps, created_at=created_at, source=source, penalty_shape=penalty_shape, published=fit.published
    )
    paths["policy"] = dump_policy(policy, out_dir / "policy.yaml")
    caps = fit.caps
    cohort_rows = caps[caps["kind"] == "cohort"]
    summary = CurveFitSummary(
        out_dir=out_dir,
        paths=paths,
        impressions=ev.n_impressions,
        mature_impressions=fit.mature_impressions,
        conversions=len(ev.conv_ts),
        conversions_credited=float(fit.credit.y.sum()),
        attribution=fit.credit.method,
        cohorts=len(cohort_rows),
        own_curves=int((cohort_rows["fallback"] == "none").sum()),
        fallbacks=int((cohort_rows["fallback"] != "none").sum()),
        censored=int(cohort_rows["censored"].sum()),
        policy_version=policy.version,
        floor=floor,
        floor_kind=floor_kind,
        seconds=time.perf_counter() - started,
        stage_seconds={
            "load": round(loaded - started, 3),
            **fit.stage_seconds,
            "plots": round(t_policy - t_plots, 3),
        },
        notes=notes,
    )
    doc = summary.to_dict() | {
        "load_report": asdict(report),
        "delay_density": {
            "edges_seconds": fit.credit.delay_edges_s.tolist(),
            "share": fit.credit.delay_density.tolist(),
        },
        "em_iterations": fit.credit.iterations,
        "maturity_horizon_seconds": fit.maturity_horizon_s,
        "written_at": datetime.now(UTC).isoformat(),
    }
    paths["summary"] = out_dir / "summary.json"
    paths["summary"].write_text(json.dumps(doc, indent=2, default=str) + "\n")
    log.info(
        "curves fit: %d cohort × level caps (%d own, %d fallback, %d censored) in %.1fs -> %s",
        summary.cohorts,
        summary.own_curves,
        summary.fallbacks,
        summary.censored,
        summary.seconds,
        out_dir,
    )
    return summary


def fit_span_curves(
    events_dir: Path,
    span: tuple[datetime, datetime],
    *,
    users: Path | None = None,
    features: FeaturesConfig,
    maturity_share: float,
    attribution_window: str = "7d",
    deduplicate: bool = True,
) -> pd.DataFrame:
    """The published-form curves of the impressions within `span` = [start, end) only (n-th impressions and their
    runs' entries); n, the credit and the maturity still come from every event. What a model trained on that span
    can be compared with like for like: its runs are the span's (`freqcap.domain.training.curve`), while the
    curves published from all events also follow runs past the end of a training set, which stops a label
    horizon before the data do."""
    cfg = fit_config_from_features(
        features,
        floor=FloorSpec(),
        attribution_window=attribution_window,
        maturity_share=maturity_share,
    )
    cfg = replace(cfg, span_us=(int(span[0].timestamp() * _US), int(span[1].timestamp() * _US)))
    ev, _, _ = _load_events(Path(events_dir), users, features, deduplicate)
    return fit_curves(ev, cfg).published


def _load_events(
    events_dir: Path, users: Path | None, features: FeaturesConfig, deduplicate: bool, data_end: datetime | None = None
):
    """(event arrays, load report, the users file used) of an events directory or file."""
    users_path = users_path_for(events_dir, users) if events_dir.is_dir() else (Path(users) if users else None)
    log.info("loading events from %s (users: %s)", events_dir, users_path or "none")
    ev, report = load_event_arrays(
        events_dir,
        users_path,
        deduplicate=deduplicate,
        data_end=data_end,
        threads=features.threads,
        memory_limit=features.memory_limit,
    )
    return ev, report, users_path

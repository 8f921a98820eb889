"""Invariant checks on built feature tables, run as a gate before anything reaches Feast.

Each check is a named SQL predicate that counts violating rows; a table passes when every count is zero.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from freqcap.config import FeaturesConfig
from freqcap.errors import FeatureValidationError
from freqcap.features.spec import COUNT_PREFIXES, USER_TABLE, tier_tables


@dataclass(frozen=True)
class CheckResult:
    table: str
    check: str
    violations: int


def _tier_checks(config: FeaturesConfig, level: str, as_of_us: int) -> dict[str, str]:
    tier = config.tier(level)
    labels = list(tier.windows)
    checks: dict[str, str] = {}
    for prefix in COUNT_PREFIXES.values():
        cols = [f"{prefix}_{w}" for w in labels]
        checks[f"{prefix}_non_negative"] = " OR ".join(f"{c} < 0 OR {c} IS NULL" for c in cols)
        checks[f"{prefix}_windows_nested"] = " OR ".join(f"{a} > {b}" for a, b in itertools.pairwise(cols))
    longest = labels[-1]
    # Each decayed term is at most 1, so the decayed count never exceeds the raw count.
    checks["decayed_at_most_raw"] = f"imp_decayed < 0 OR imp_decayed > imp_{longest} + 1e-9"
    checks["last_imp_not_after_as_of"] = f"epoch_us(last_imp_ts) > {as_of_us}"
    checks["last_imp_present_iff_impressions"] = f"(last_imp_ts IS NULL) <> (imp_{longest} = 0)"
    checks["snapshot_time_is_as_of"] = f"epoch_us(event_timestamp) <> {as_of_us}"
    return checks


def check_feature_tables(paths: dict[str, Path], as_of: datetime, config: FeaturesConfig) -> list[CheckResult]:
    """Run every invariant; raise FeatureValidationError naming the failed checks, else return the results."""
    as_of_us = int(as_of.timestamp() * 1_000_000)
    results: list[CheckResult] = []
    con = duckdb.connect()
    try:
        for table in tier_tables(config):
            src = f"read_parquet('{paths[table.name]}')"
            for name, predicate in _tier_checks(config, table.level, as_of_us).items():
                n = con.sql(f"SELECT count(*) FROM {src} WHERE {predicate}").fetchall()[0][0]
                results.append(CheckResult(table.name, name, n))
            dupes = con.sql(
                f"SELECT count(*) FROM (SELECT 1 FROM {src} GROUP BY user_id, {table.entity_column} HAVING count(*) > 1)"
            ).fetchall()[0][0]
            results.append(CheckResult(table.name, "key_unique", dupes))
        src = f"read_parquet('{paths[USER_TABLE]}')"
        user_checks = {
            "key_unique": f"user_id IN (SELECT user_id FROM {src} GROUP BY user_id HAVING count(*) > 1)",
            "signal_tier_known": "signal_tier NOT IN ('impression_only', 'engaged', 'converter')",
            "counts_non_negative": "imp_24h < 0 OR imp_7d < 0 OR clk_28d < 0 OR conv_28d < 0 OR imp_24h > imp_7d",
        }
        for name, predicate in user_checks.items():
            n = con.sql(f"SELECT count(*) FROM {src} WHERE {predicate}").fetchall()[0][0]
            results.append(CheckResult(USER_TABLE, name, n))
    finally:
        con.close()
    failed = [r for r in results if r.violations]
    if failed:
        detail = "; ".join(f"{r.table}.{r.check}: {r.violations} rows" for r in failed)
        raise FeatureValidationError(f"feature tables failed {len(failed)} check(s): {detail}")
    return results

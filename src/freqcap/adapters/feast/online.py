"""Reading features back from the online store through Feast's own `get_online_features`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from freqcap.adapters.feast.snapshots import list_snapshots
from freqcap.adapters.feast.store import open_store
from freqcap.config import Settings
from freqcap.domain.features import USER_TABLE, tier_tables
from freqcap.layout import offline_root


def user_pairs(repo_dir: Path, table: str, entity_column: str, user_id: str, limit: int) -> list[str]:
    """Entity ids paired with `user_id` in the newest snapshot of `table` (most impressions first)."""
    snaps = list_snapshots(offline_root(repo_dir), table)
    if not snaps:
        return []
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"SELECT {entity_column} FROM read_parquet(?) WHERE user_id = ? ORDER BY imp_decayed DESC, {entity_column} LIMIT ?",
            [str(snaps[-1][1]), user_id, limit],
        ).fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]


def read_user_features(
    settings: Settings, repo_dir: Path, user_id: str, limit: int = 5, store: Any = None
) -> dict[str, Any]:
    """A user's online features: user attributes plus up to `limit` pairs per tier, as Feast returns them."""
    store = store or open_store(settings, repo_dir)
    out: dict[str, Any] = {}
    user_view = store.get_feature_view(USER_TABLE)
    refs = [f"{USER_TABLE}:{f.name}" for f in user_view.features]
    out[USER_TABLE] = store.get_online_features(features=refs, entity_rows=[{"user_id": user_id}]).to_dict()
    for table in tier_tables(settings.features):
        ids = user_pairs(repo_dir, table.name, table.entity_column, user_id, limit)
        if not ids:
            out[table.name] = {}
            continue
        view = store.get_feature_view(table.name)
        refs = [f"{table.name}:{f.name}" for f in view.features]
        rows = [{"user_id": user_id, table.entity_column: i} for i in ids]
        out[table.name] = store.get_online_features(features=refs, entity_rows=rows).to_dict()
    return out

"""Online keys expire with the longest window they serve: the TTL written to real Redis follows the configured
windows plus `retention.online_key_margin` (both the bulk writer and the stream's direct pusher)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from freqcap.adapters.feast.bulk import bulk_materialize
from tests.integration.test_bulk_materialize import Online, _ad_table, _synthetic_rows

T1 = datetime(2026, 10, 10, tzinfo=UTC)
# Every tier's longest window 14d, the signal lookback 14d, a 2d margin: keys must live 16 days.
TIERS = (
    '[{level: advertiser, windows: ["1h", "24h", "14d"], half_life: "7d"},'
    ' {level: campaign, windows: ["1h", "24h", "14d"], half_life: "3d"},'
    ' {level: ad, windows: ["1h", "24h", "14d"], half_life: "1d"}]'
)
EXPECTED_TTL = int(timedelta(days=14 + 2).total_seconds())


@pytest.mark.redis
def test_bulk_written_keys_live_for_the_longest_window_plus_the_margin(tmp_path, redis_connection_string):
    online = Online(
        tmp_path,
        "redis",
        redis_connection_string,
        FREQCAP__FEATURES__TIERS=TIERS,
        FREQCAP__FEATURES__SIGNAL_LOOKBACK="14d",
        FREQCAP__RETENTION__ONLINE_KEY_MARGIN="2d",
    )
    try:
        assert online.settings.online_key_ttl == timedelta(days=16)
        rows = [{k: v for k, v in r.items() if k != "imp_28d"} | {"imp_14d": r["imp_28d"]} for r in _synthetic_rows(20)]
        snap = online.place("user_ad", _ad_table(online.settings, rows, T1), T1)
        bulk_materialize(online.store, online.settings, {"user_ad": snap}, T1)
        keys = online.redis_keys()
        assert len(keys) == 20
        ttls = [online.redis.ttl(k) for k in keys]
        # Written moments ago: within a minute of the full TTL, never above it.
        assert all(EXPECTED_TTL - 60 < t <= EXPECTED_TTL for t in ttls), ttls[:5]
    finally:
        online.close()


@pytest.mark.redis
def test_the_stream_pusher_uses_the_same_ttl(tmp_path, redis_connection_string):
    from freqcap.jobs.stream import _pusher

    online = Online(
        tmp_path,
        "redis",
        redis_connection_string,
        FREQCAP__FEATURES__TIERS=TIERS,
        FREQCAP__FEATURES__SIGNAL_LOOKBACK="14d",
        FREQCAP__RETENTION__ONLINE_KEY_MARGIN="2d",
    )
    try:
        pusher = _pusher(online.settings, online.store)
        assert pusher.key_ttl == EXPECTED_TTL
        assert online.store.config.online_store.key_ttl_seconds == EXPECTED_TTL
    finally:
        online.close()

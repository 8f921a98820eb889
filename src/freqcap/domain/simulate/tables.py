"""Arrow tables from a sampled `World`: the event contract, the catalog, users and the latent truth (no I/O).

Row order of the events: by UTC date, then user, then time (impressions, clicks and conversions interleaved),
so each date partition is a contiguous slice and each user's history is contiguous within it. Event ids are
`imp-`, `clk-`, `cnv-` + a zero-padded sequence number in that order.

String columns are built without per-row Python: small dictionaries (users, ads, formats) are formatted
once and gathered with `take` (in two threads; Arrow releases the GIL); event ids are fixed-width ASCII
written digit by digit into one numpy buffer.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from freqcap.domain.events import ADS_SCHEMA, EVENT_SCHEMA, EVENT_TYPES, LEVELS, TIMESTAMP_TYPE, USERS_SCHEMA
from freqcap.domain.simulate.model import DAY_US, World

IMPRESSION, CLICK, CONVERSION = 0, 1, 2
ID_PREFIXES: tuple[str, str, str] = ("imp-", "clk-", "cnv-")  # by event type code

TRUTH_IMPRESSIONS_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("p_conv", pa.float64(), nullable=False),
        pa.field("p_click", pa.float64(), nullable=False),
        *[pa.field(f"n_eff_{lv}", pa.float64(), nullable=False) for lv in LEVELS],
        *[pa.field(f"count_{lv}", pa.int32(), nullable=False) for lv in LEVELS],
        pa.field("clicked", pa.bool_(), nullable=False),
        pa.field("converted", pa.bool_(), nullable=False),
        pa.field("conversion_ts", TIMESTAMP_TYPE, nullable=True),
        pa.field("conversion_event_id", pa.string(), nullable=True),
    ]
)

TRUTH_USERS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("audience", pa.string(), nullable=False),
        pa.field("activity", pa.float64(), nullable=False),
        pa.field("baseline", pa.float64(), nullable=False),
        pa.field("click_propensity", pa.float64(), nullable=False),
    ]
)


def _width(n: int, minimum: int) -> int:
    return max(minimum, len(str(max(n - 1, 0))))


def fixed_width_ids(prefixes: tuple[str, ...], prefix_code: np.ndarray, numbers: np.ndarray, width: int) -> pa.Array:
    """`prefixes[prefix_code[i]] + zero-padded numbers[i]` as a StringArray (prefixes of equal length)."""
    lengths = {len(s) for s in prefixes}
    if len(lengths) != 1:
        raise ValueError("prefixes must have equal length")
    p_len = lengths.pop()
    row = p_len + width
    n = len(numbers)
    if n and int(numbers.max()) >= 10**width:
        raise ValueError("numbers do not fit the width")
    cm = np.empty((row, n), dtype=np.uint8)  # column-major: one contiguous row per character position
    table = np.frombuffer("".join(prefixes).encode("ascii"), dtype=np.uint8).reshape(len(prefixes), p_len)
    if len(prefixes) == 1:
        cm[:p_len] = table[0][:, None]
    else:
        cm[:p_len] = table[prefix_code].T
    rest = numbers.astype(np.uint32 if width <= 9 else np.uint64)
    for k in range(width - 1, -1, -1):
        quotient = rest // 10
        cm[p_len + k] = rest - quotient * 10
        rest = quotient
    cm[p_len:] += ord("0")
    data = cm.T.copy()
    offsets = np.arange(n + 1, dtype=np.int64) * row
    if offsets[-1] < 2**31:
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data))
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data)).cast(pa.string())


def _sparse_ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """Like `fixed_width_ids` for one prefix, but null where numbers < 0 (built only for the valid rows)."""
    valid = numbers >= 0
    rows = np.flatnonzero(valid)
    dense = fixed_width_ids((prefix,), np.zeros(0, np.int8), numbers[rows], width)
    offsets = np.zeros(len(numbers) + 1, dtype=np.int64)
    np.cumsum(np.where(valid, len(prefix) + width, 0), out=offsets[1:])
    if offsets[-1] >= 2**31:  # pragma: no cover - billions of conversions
        raise ValueError("too many ids for one string array")
    return pa.StringArray.from_buffers(
        len(numbers),
        pa.py_buffer(offsets.astype(np.int32)),
        dense.buffers()[2],
        pa.py_buffer(np.packbits(valid, bitorder="little")),
        null_count=len(numbers) - len(rows),
    )


def _formatted(prefix: str, n: int, width: int) -> pa.Array:
    return fixed_width_ids((prefix,), np.zeros(0, dtype=np.int8), np.arange(n), width)


@dataclass(frozen=True)
class Dictionaries:
    """The formatted id of every user, advertiser, campaign, ad, format and audience, by model index."""

    user_ids: pa.Array
    advertiser_ids: pa.Array
    campaign_ids: pa.Array
    ad_ids: pa.Array
    formats: pa.Array
    audiences: pa.Array


def dictionaries(world: World) -> Dictionaries:
    cat = world.catalog
    return Dictionaries(
        user_ids=fixed_width_ids(("u",), np.zeros(0, np.int8), world.user_label, _width(len(world.audience), 7)),
        advertiser_ids=_formatted("adv-", cat.n_advertisers, _width(cat.n_advertisers, 3)),
        campaign_ids=_formatted("cmp-", cat.n_campaigns, _width(cat.n_campaigns, 4)),
        ad_ids=_formatted("ad-", cat.n_ads, _width(cat.n_ads, 5)),
        formats=pa.array(world.params.format_names(), pa.string()),
        audiences=pa.array(world.params.audience_names(), pa.string()),
    )


@dataclass(frozen=True)
class EventLayout:
    """Where every event goes: arrays in final row order, plus the sequence numbers the truth needs."""

    etype: np.ndarray  # int8 event type code per row
    source_imp: np.ndarray  # impression index per row (for conversions: the last-touch impression)
    ts: np.ndarray  # int64 µs per row
    value: np.ndarray  # float64, NaN except conversions
    seq: np.ndarray  # int64 sequence number within the row's event type
    imp_seq: np.ndarray  # int64 [n_impressions]: sequence number of impression i (model order)
    conv_seq: np.ndarray  # int64 [n latent conversions]: sequence number of the conversion, -1 if not emitted
    id_width: int
    day0_us: int

    @property
    def n_rows(self) -> int:
        return len(self.ts)


def event_layout(world: World) -> EventLayout:
    m = world.n_impressions
    conv_rows = np.flatnonzero(world.conv_emitted)
    n_click, n_conv = len(world.click_imp), len(conv_rows)
    etype = np.concatenate(
        [
            np.full(m, IMPRESSION, np.int8),
            np.full(n_click, CLICK, np.int8),
            np.full(n_conv, CONVERSION, np.int8),
        ]
    )
    source_imp = np.concatenate([np.arange(m), world.click_imp, world.conv_attributed_imp[conv_rows]])
    ts = np.concatenate([world.imp_ts, world.click_ts, world.conv_ts[conv_rows]])
    user = world.imp_user[source_imp].astype(np.int64)
    value = np.concatenate([np.full(m + n_click, np.nan), world.conv_value[conv_rows]])

    day0_us = world.start_us - world.start_us % DAY_US
    day = (ts - day0_us) // DAY_US
    n_days = int(day.max()) + 1 if len(day) else 0
    # Counting sort by day (stable), then a stable sort by (day, user, time of day) on nearly sorted runs.
    order = np.concatenate([np.flatnonzero(day == d) for d in range(n_days)]) if n_days else np.zeros(0, np.int64)
    n_users = len(world.audience)
    if n_days * n_users < 2**26:  # (day, user) in 26 bits, time of day (< 2^37 µs) in 37
        key = ((day[order] * n_users + user[order]) << 37) | (ts[order] - day0_us - day[order] * DAY_US)
        order = order[np.argsort(key, kind="stable")]
        del key
    else:  # pragma: no cover - very large worlds
        order = order[np.lexsort((ts[order], user[order], day[order]))]
    etype, source_imp, ts, value = etype[order], source_imp[order], ts[order], value[order]

    seq = np.empty(len(ts), dtype=np.int64)
    for code in (IMPRESSION, CLICK, CONVERSION):
        where = etype == code
        seq[where] = np.arange(int(where.sum()))
    imp_seq = np.empty(m, dtype=np.int64)
    imp_rows = order < m
    imp_seq[order[imp_rows]] = np.arange(m)
    conv_seq = np.full(len(world.conv_imp), -1, dtype=np.int64)
    conv_rank = np.empty(n_conv, dtype=np.int64)
    conv_rank[order[order >= m + n_click] - (m + n_click)] = np.arange(n_conv)
    conv_seq[conv_rows] = conv_rank
    return EventLayout(
        etype=etype,
        source_imp=source_imp,
        ts=ts,
        value=value,
        seq=seq,
        imp_seq=imp_seq,
        conv_seq=conv_seq,
        id_width=_width(max(m, 1), 9),
        day0_us=int(day0_us),
    )


def events_table(world: World, layout: EventLayout, d: Dictionaries | None = None, threads: int = 2) -> pa.Table:
    """The event contract (EVENT_SCHEMA), rows in `layout` order."""
    d = d or dictionaries(world)
    src = layout.source_imp
    jobs = {
        "event_id": lambda: fixed_width_ids(ID_PREFIXES, layout.etype, layout.seq, layout.id_width),
        "event_type": lambda: pc.take(pa.array(EVENT_TYPES, pa.string()), pa.array(layout.etype)),
        "user_id": lambda: pc.take(d.user_ids, pa.array(world.imp_user[src])),
        "advertiser_id": lambda: pc.take(d.advertiser_ids, pa.array(world.imp_advertiser[src])),
        "campaign_id": lambda: pc.take(d.campaign_ids, pa.array(world.imp_campaign[src])),
        "ad_id": lambda: pc.take(d.ad_ids, pa.array(world.imp_ad[src])),
        "format": lambda: pc.take(d.formats, pa.array(world.imp_format[src])),
    }
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        columns = {name: f.result() for name, f in futures.items()}
    columns["event_ts"] = pa.array(layout.ts, TIMESTAMP_TYPE)
    columns["conversion_value"] = pa.array(layout.value, pa.float64(), mask=np.isnan(layout.value))
    return pa.Table.from_arrays([columns[name] for name in EVENT_SCHEMA.names], schema=EVENT_SCHEMA)


def truth_impressions_table(world: World, layout: EventLayout, d: Dictionaries | None = None) -> pa.Table:
    """One row per impression, in (user, time) order, keyed by the impression's event_id."""
    d = d or dictionaries(world)
    m = world.n_impressions
    conv_seq_of_imp = np.full(m, -1, dtype=np.int64)
    conv_seq_of_imp[world.conv_imp] = layout.conv_seq
    conv_ts_of_imp = np.full(m, -1, dtype=np.int64)
    conv_ts_of_imp[world.conv_imp] = world.conv_ts
    conv_ids = _sparse_ids(ID_PREFIXES[CONVERSION], conv_seq_of_imp, layout.id_width)
    return pa.Table.from_arrays(
        [
            fixed_width_ids(ID_PREFIXES[:1], np.zeros(0, np.int8), layout.imp_seq, layout.id_width),
            pc.take(d.user_ids, pa.array(world.imp_user)),
            pa.array(world.p_conv),
            pa.array(world.p_click),
            *[pa.array(world.n_eff[lv]) for lv in LEVELS],
            *[pa.array(world.count[lv]) for lv in LEVELS],
            pa.array(world.clicked),
            pa.array(world.converted),
            pa.array(conv_ts_of_imp, TIMESTAMP_TYPE, mask=conv_ts_of_imp < 0),
            conv_ids,
        ],
        schema=TRUTH_IMPRESSIONS_SCHEMA,
    )


def users_table(world: World, d: Dictionaries | None = None) -> pa.Table:
    """One row per user, sorted by user_id."""
    d = d or dictionaries(world)
    by_id = np.argsort(world.user_label)
    return pa.Table.from_arrays(
        [pc.take(d.user_ids, pa.array(by_id)), pc.take(d.audiences, pa.array(world.audience[by_id]))],
        schema=USERS_SCHEMA,
    )


def truth_users_table(world: World, d: Dictionaries | None = None) -> pa.Table:
    """Latent user attributes, one row per user, sorted by user_id."""
    d = d or dictionaries(world)
    by_id = np.argsort(world.user_label)
    return pa.Table.from_arrays(
        [
            pc.take(d.user_ids, pa.array(by_id)),
            pc.take(d.audiences, pa.array(world.audience[by_id])),
            pa.array(world.activity[by_id]),
            pa.array(world.baseline[by_id]),
            pa.array(world.click_propensity[by_id]),
        ],
        schema=TRUTH_USERS_SCHEMA,
    )


def ads_table(world: World, d: Dictionaries | None = None) -> pa.Table:
    d = d or dictionaries(world)
    cat = world.catalog
    return pa.Table.from_arrays(
        [
            d.ad_ids,
            pc.take(d.campaign_ids, pa.array(cat.ad_campaign)),
            pc.take(d.advertiser_ids, pa.array(cat.ad_advertiser)),
        ],
        schema=ADS_SCHEMA,
    )


@dataclass(frozen=True)
class WorldTables:
    events: pa.Table  # EVENT_SCHEMA
    users: pa.Table  # USERS_SCHEMA
    ads: pa.Table  # ADS_SCHEMA
    truth_impressions: pa.Table  # TRUTH_IMPRESSIONS_SCHEMA
    truth_users: pa.Table  # TRUTH_USERS_SCHEMA


def build_tables(world: World) -> WorldTables:
    """All tables in memory (convenient for small worlds; the writer builds them one at a time)."""
    d = dictionaries(world)
    layout = event_layout(world)
    return WorldTables(
        events=events_table(world, layout, d),
        users=users_table(world, d),
        ads=ads_table(world, d),
        truth_impressions=truth_impressions_table(world, layout, d),
        truth_users=truth_users_table(world, d),
    )

"""Forgetting users in Feast's SQLite online store: a real SQLite file in Feast's table layout, keys made by Feast's
own serializer (not freqcap's builders), traps for ids that share bytes with a forgotten one."""

from __future__ import annotations

import sqlite3
import struct

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from freqcap.adapters.feast.forget import forget_sqlite, user_of_entity_key, user_value_suffix

PROJECT = "proj"
FORMS = {"u1", "u.k1.AAAAAAAAAAAAAAAAAAAAAA"}


def feast_key(**values: str) -> bytes:
    names = sorted(values)  # Feast serializes join keys in sorted order
    key = EntityKey(join_keys=names, entity_values=[Value(string_val=values[n]) for n in names])
    return serialize_entity_key(key, entity_key_serialization_version=3)


def _table(con, name):
    con.execute(
        f'CREATE TABLE "{name}" (entity_key BLOB, feature_name TEXT, value BLOB, vector_value BLOB, '
        "event_ts timestamp, created_ts timestamp, PRIMARY KEY(entity_key, feature_name))"
    )


def _rows(con, table):
    return sorted((bytes(k), f) for k, f in con.execute(f'SELECT entity_key, feature_name FROM "{table}"'))


def test_user_of_entity_key_reads_feasts_bytes():
    assert user_of_entity_key(feast_key(user_id="u1", ad_id="a1"), 3) == "u1"
    assert user_of_entity_key(feast_key(user_id="ü-ĉ"), 3) == "ü-ĉ"
    assert user_of_entity_key(feast_key(ad_id="a1"), 3) is None
    assert user_of_entity_key(b"\x01garbage", 3) is None
    assert feast_key(user_id="u1", ad_id="a1").endswith(user_value_suffix("u1"))


def test_sqlite_deletes_every_view_row_of_the_forms_and_nothing_else(tmp_path):
    db = tmp_path / "online.db"
    con = sqlite3.connect(db)
    tables = {
        f"{PROJECT}_user_ad": [
            ({"user_id": "u1", "ad_id": "a1"}, True),
            ({"user_id": "u1", "ad_id": "a2"}, True),
            ({"user_id": "u10", "ad_id": "a1"}, False),  # longer id starting with a forgotten one
            ({"user_id": "xu1", "ad_id": "a1"}, False),  # longer id ending with a forgotten one
            ({"user_id": "u2", "ad_id": "u1"}, False),  # an ad named like the user
            ({"user_id": "u.k1.AAAAAAAAAAAAAAAAAAAAAA", "ad_id": "a3"}, True),
        ],
        f"{PROJECT}_user_ad_stream": [
            ({"user_id": "u1", "ad_id": "a9"}, True),
            ({"user_id": "u3", "ad_id": "a9"}, False),
        ],
        f"{PROJECT}_user": [({"user_id": "u1"}, True), ({"user_id": "u2"}, False)],
        "other_user": [({"user_id": "u1"}, False)],  # another project's table
    }
    expected = {}
    for table, entries in tables.items():
        _table(con, table)
        keep = []
        for values, forgotten in entries:
            for feature in ("f1", "f2"):
                key = feast_key(**values)
                con.execute(f"INSERT INTO \"{table}\" VALUES (?, ?, x'00', NULL, 0, 0)", (key, feature))
                if not forgotten:
                    keep.append((key, feature))
        expected[table] = sorted(keep)
    con.commit()
    con.close()

    result = forget_sqlite(db, PROJECT, FORMS, 3)

    con = sqlite3.connect(db)
    for table, keep in expected.items():
        assert _rows(con, table) == keep, table
    assert result.removed == 2 * 5  # five forgotten entity keys, two features each
    con.close()
    # Deleted bytes are overwritten, not left in free pages of the file (or its journal). The forget job turns
    # `secure_delete` on; Debian's SQLite has it on by default, so here this guards the outcome, not the pragma.
    for path in tmp_path.iterdir():
        assert b"u.k1.AAAAAAAAAAAAAAAAAAAAAA" not in path.read_bytes(), path.name
    assert forget_sqlite(db, PROJECT, FORMS, 3).removed == 0  # idempotent


def test_sqlite_store_that_does_not_exist_yet_is_nothing_to_do(tmp_path):
    assert forget_sqlite(tmp_path / "none.db", PROJECT, FORMS, 3).removed == 0
    assert not (tmp_path / "none.db").exists()


def test_suffix_is_type_length_value():
    assert user_value_suffix("ab") == struct.pack("<II", 2, 2) + b"ab"

"""`stream.push_mode: atomic` is refused, naming the setting, wherever the flush script could not write the rows."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from freqcap.config import load_settings

BASE = {
    "FREQCAP__STREAM__PUSH_MODE": "atomic",
    "FREQCAP__STREAM__REDIS_URL": "redis://localhost:6379/0",
    "FREQCAP__FEAST__ONLINE__KIND": "redis",
    "FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING": "127.0.0.1:6379,db=0",
}


def test_atomic_push_on_the_streams_own_server_is_accepted():
    assert load_settings(environ=BASE).stream.push_mode == "atomic"  # localhost is 127.0.0.1; default port


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"FREQCAP__FEAST__ONLINE__REDIS_CONNECTION_STRING": "127.0.0.1:6380"}, "redis_connection_string"),
        ({"FREQCAP__FEAST__ONLINE__KIND": "sqlite"}, "feast.online.kind"),
        (
            {
                "FREQCAP__STREAM__REDIS_KIND": "redis_cluster",
                "FREQCAP__STREAM__PARTITIONS": "2",
                "FREQCAP__FEAST__ONLINE__KIND": "redis_cluster",
            },
            "stream.redis_kind",
        ),
        ({"FREQCAP__FEAST__ONLINE_KEY_TTL": "1h"}, "stream.retention"),
    ],
)
def test_atomic_push_elsewhere_is_refused_naming_the_setting(override, named):
    with pytest.raises(ValidationError, match=named.replace(".", r"\.")):
        load_settings(environ={**BASE, **override})

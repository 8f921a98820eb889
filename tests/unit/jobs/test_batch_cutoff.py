"""Review finding: a batch cut-off that is not a whole number of stream buckets loses stream events at the seam.
The features job refuses such an as-of before anything reaches the online store, naming the setting."""

from __future__ import annotations

import pytest

from freqcap.config import load_settings
from freqcap.domain.stream.seam import SeamError
from freqcap.jobs.features import materialize_job
from freqcap.layout import DataLayout


def _settings(tmp_path, enabled: bool):
    return load_settings(
        environ={
            "FREQCAP__DATA_DIR": str(tmp_path / "data"),
            "FREQCAP__STREAM__ENABLED": "true" if enabled else "false",
            "FREQCAP__STREAM__BUCKET": "1m",
        }
    )


def test_materialize_refuses_a_cutoff_inside_a_stream_bucket(tmp_path):
    settings = _settings(tmp_path, enabled=True)
    build = {"as_of": "2026-10-15T12:00:30+00:00", "paths": {}, "rows": {}, "events_scanned": 0}
    with pytest.raises(SeamError, match=r"stream\.bucket \(60s\)"):
        materialize_job(build, settings)
    assert not DataLayout.of(settings).offline_root.exists(), "nothing may be published before the check"

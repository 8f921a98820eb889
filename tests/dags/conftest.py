from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated Airflow metadata DB (SQLite, in the session's isolated AIRFLOW_HOME)."""
    from freqcap.adapters.airflow.local import init_metadata_db

    init_metadata_db()

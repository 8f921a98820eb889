"""Decide requests without a user id: both paths (the msgspec fast path and the FastAPI route) answer the policy's
cohort-level decision, equal to a brute-force computation from the policy document, flagged `anonymous`, counted
in /metrics, logged under the `(anonymous)` cohort (and the decision-log gate passes on those rows), without a
single store lookup. Requests with an id are answered as before (`anonymous: false`)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from freqcap.adapters.decision_log import DecisionLog, read_decision_log
from freqcap.api.app import create_app
from freqcap.config import load_settings
from freqcap.domain.policy import parse_policy
from freqcap.domain.policy.engine import Candidate, decide
from freqcap.domain.policy.schema import policy_document
from tests.integration.test_feast_online import T1
from tests.integration.test_serving import TOKEN, FakeReader, body, policy_doc, write_policy
from tests.unit.domain.policy.test_anonymous import brute_force


class CountingReader(FakeReader):
    """FakeReader that counts its reads: an id-less request must not make any."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def read(self, user_id, cands):
        self.reads += 1
        return super().read(user_id, cands)


def _anonymous(payload: dict, how: str) -> dict:
    """`payload` without an id: the field left out, or null."""
    out = {k: v for k, v in payload.items() if k != "user_id"}
    return out if how == "absent" else {**out, "user_id": None}


def _app(tmp_path, reader, **kw):
    return create_app(
        load_settings(),
        policy_path=kw.pop("policy_path", write_policy(tmp_path)),
        reader=reader,
        admin_token=TOKEN,
        budget_ms=5000.0,
        admission_ms=1000.0,
        **kw,
    )


def _expected() -> tuple[float, set[tuple[str, str, int]]]:
    return brute_force(policy_document(parse_policy(policy_doc())))


@pytest.mark.parametrize("how", ["absent", "null"])
def test_both_paths_answer_the_brute_force_cohort_decision_without_a_lookup(tmp_path, how):
    penalty, binding_caps = _expected()
    reader = CountingReader()
    with TestClient(_app(tmp_path, reader)) as client:
        reads_at_start = reader.reads  # the app's warm-up lookups
        fast = client.post("/v1/decide", json=_anonymous(body(), how))
        # A numeric `ts` is a form only pydantic reads: this one goes through the FastAPI route.
        slow_body = {**_anonymous(body(), how), "context": {"format": "feed", "ts": T1.timestamp()}}
        slow = client.post("/v1/decide", json=slow_body)
        assert reader.reads == reads_at_start  # no store lookup for either
    assert fast.status_code == slow.status_code == 200, (fast.text, slow.text)
    assert fast.json() == slow.json()
    got = fast.json()
    assert got["anonymous"] is True and got["degraded"] is False and got["degraded_reason"] is None
    assert got["policy_version"] == "p1"
    assert [d["ad_id"] for d in got["decisions"]] == [c["ad_id"] for c in body()["candidates"]]
    for d in got["decisions"]:
        assert d["eligible"] is True and d["penalty"] == pytest.approx(penalty, abs=1e-6)
        b = d["binding"]
        assert (b["level"], b["window"], b["cap"]) in binding_caps
        assert b["count"] == pytest.approx((b["cap"] - 1) / 2) and d["distance_to_cap"] == pytest.approx(
            (b["cap"] + 1) / 2
        )
        assert d["reason"].startswith("anonymous:")


def test_requests_with_an_id_are_decided_as_before(tmp_path):
    reader = FakeReader()
    with TestClient(_app(tmp_path, reader)) as client:
        got = client.post("/v1/decide", json=body()).json()
    assert got["anonymous"] is False and got["degraded"] is False
    state = reader.read("u1", [])
    cands = [Candidate(**c) for c in body()["candidates"]]
    expected = decide(parse_policy(policy_doc()), state.audience, state.signal_tier, cands, state.states, T1)
    assert [(d["ad_id"], d["penalty"], d["eligible"]) for d in got["decisions"]] == [
        (e.ad_id, e.penalty, e.eligible) for e in expected
    ]


def test_id_less_requests_are_counted_in_metrics(tmp_path):
    with TestClient(_app(tmp_path, FakeReader())) as client:
        for payload in (_anonymous(body(), "absent"), body(), _anonymous(body(), "null"), body("u2")):
            assert client.post("/v1/decide", json=payload).status_code == 200
        text = client.get("/metrics").text
    assert "freqcap_decide_anonymous_total 2\n" in text
    assert "freqcap_decide_requests_total 4\n" in text
    assert f"freqcap_decisions_total {4 * len(body()['candidates'])}\n" in text


def test_without_a_policy_an_id_less_request_fails_open_flagged(tmp_path):
    with TestClient(_app(tmp_path, FakeReader(), policy_path=None)) as client:
        got = client.post("/v1/decide", json=_anonymous(body(), "absent")).json()
        text = client.get("/metrics").text
    assert got["anonymous"] is True and got["degraded"] is True and got["degraded_reason"] == "no_policy"
    assert all(d["penalty"] == 1.0 and d["eligible"] for d in got["decisions"])
    assert 'freqcap_decide_fail_open_total{reason="no_policy"} 1' in text and "freqcap_decide_anonymous_total 1" in text


def test_decision_log_rows_of_id_less_requests_are_marked_and_pass_the_gate(tmp_path):
    from freqcap.adapters.gx.decision_log import validate_decision_log

    directory = tmp_path / "decisions"
    log = DecisionLog(directory, sample_rate=1.0, flush_seconds=0.05)
    with TestClient(_app(tmp_path, FakeReader(), decision_log=log)) as client:
        for payload in (_anonymous(body(), "absent"), body()):
            assert client.post("/v1/decide", json=payload).status_code == 200
    rows = read_decision_log(directory)
    n = len(body()["candidates"])
    assert len(rows) == 2 * n
    anonymous = rows[rows["audience"] == "(anonymous)"]
    assert len(anonymous) == n and (anonymous["signal_tier"] == "(anonymous)").all()
    assert not anonymous["fail_open"].any() and not anonymous["degraded"].any() and not anonymous["hit"].any()
    assert (rows[rows["audience"] != "(anonymous)"]["audience"] == "unknown").all()  # FakeReader's audience
    penalty, _ = _expected()
    assert anonymous["penalty"].tolist() == pytest.approx([penalty] * n, abs=1e-6)
    assert "user_id" not in json.dumps(rows.columns.tolist())
    report = validate_decision_log(directory, load_settings(), docs=False)
    assert report.rows["decision_log"] == 2 * n

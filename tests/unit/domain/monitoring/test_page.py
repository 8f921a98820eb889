"""The on-call page's HTML: status, since when, which cohort — and nothing unescaped."""

from __future__ import annotations

from html.parser import HTMLParser

from freqcap.domain.monitoring.page import render_page


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: dict[str, dict] = {}
        self.off: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids[attrs["id"]] = attrs
        if tag == "tr" and attrs.get("class") == "off" and "data-cohort" in attrs:
            self.off.append(attrs["data-cohort"])
        self.scripts += tag == "script"


def _ctx(**over):
    ctx = {
        "as_of": "2026-10-04T14:00:00+00:00",
        "window": "1h",
        "baseline_window": "24h",
        "drift_window": "24h",
        "serving_degraded": True,
        "fail_open": {"rate": 0.75, "decisions": 400, "reasons": {"timeout": 300},
                      "since": "2026-10-04T13:12:30+00:00", "incident_opened_at": "2026-10-04T14:00:00+00:00"},
        "open": [{"rule": "serving_fail_open", "segment": "all", "severity": "page", "opened_at": "2026-10-04T14:00:00+00:00",
                  "value": 0.75, "threshold": 0.05, "metric": "fail_open_rate"},
                 {"rule": "cap_hit_rate_shift", "segment": "cohort=cold/<b>engaged</b>", "severity": "warn",
                  "opened_at": "2026-10-04T13:00:00+00:00", "value": 0.4, "threshold": 0.15, "metric": "cap_hit_rate_change"}],
        "fired": [{"rule": "serving_fail_open", "segment": "all"}],
        "resolved": [],
        "cohorts": [{"segment": "cohort=cold/<b>engaged</b>", "cohort": "cold/<b>engaged</b>", "rate": 0.6, "decisions": 120,
                     "baseline_rate": 0.2, "baseline_decisions": 900, "change": 0.4},
                    {"segment": "cohort=returning/engaged", "cohort": "returning/engaged", "rate": 0.2, "decisions": 300,
                     "baseline_rate": 0.21, "baseline_decisions": 2000, "change": -0.01}],
        "cohorts_off": ["cohort=cold/<b>engaged</b>"],
        "drift": None,
        "drift_notes": ["no reference"],
        "stream": {"lag_seconds": 1200.0, "stale": True, "watermark": None, "fresh_at": None},
        "frequency": {},
        "notes": [],
    }  # fmt: skip
    ctx.update(over)
    return ctx


def test_degraded_page_says_since_when_and_which_cohort():
    html = render_page(_ctx())
    parsed = _Collect()
    parsed.feed(html)
    assert parsed.ids["serving-status"]["data-state"] == "degraded"
    assert "SERVING DEGRADED" in html and "75.0%" in html and "timeout: 300" in html
    assert "since" in parsed.ids and "2026-10-04 13:12:30 UTC" in html
    assert parsed.off == ["cold/<b>engaged</b>"]  # the attribute round-trips: it was escaped
    assert "<b>engaged</b>" not in html and "&lt;b&gt;engaged&lt;/b&gt;" in html
    assert parsed.scripts == 0
    assert "STALE" in html and "1,200 s" in html
    assert 'class="new"' in html  # the fail-open alarm is new in this run


def test_healthy_page():
    html = render_page(_ctx(serving_degraded=False, open=[], fired=[], cohorts_off=[], stream=None,
                            fail_open={"rate": 0.0, "decisions": 800, "reasons": {}, "since": None}))  # fmt: skip
    parsed = _Collect()
    parsed.feed(html)
    assert parsed.ids["serving-status"]["data-state"] == "ok" and "since" not in parsed.ids
    assert "No open alarms." in html and "No stream configured" in html and parsed.off == []


def test_paging_section_shows_failed_deliveries_and_what_is_pending():
    paging = {
        "receivers": ["oncall", "chat"],
        "messages": [
            {"receiver": "oncall", "status": "resolved", "rule": "serving_fail_open", "ok": False, "attempts": 3,
             "error": "URLError: [Errno 111] Connection refused"},
            {"receiver": "chat", "status": "resolved", "rule": "serving_fail_open", "ok": True, "attempts": 1,
             "error": None},
        ],
        "suppressed": [],
        "pending": 1,
    }  # fmt: skip
    html = render_page({"as_of": "2026-10-04T06:00:00+00:00", "paging": paging})
    section = html.split('<section id="paging">', 1)[1].split("</section>", 1)[0]
    assert "1 message(s) pending" in section
    assert "oncall: resolved serving_fail_open — FAILED: URLError: [Errno 111] Connection refused" in section
    assert "chat: resolved serving_fail_open — delivered after 1 attempt(s)" in section
    assert "No webhook receivers configured" in render_page({"as_of": "2026-10-04T06:00:00+00:00"})

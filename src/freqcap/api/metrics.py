"""The decision API's counters, rendered by hand in the Prometheus text format (no client library on the hot path)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from freqcap.adapters.decision_log import DecisionLog, is_hit
from freqcap.domain.policy.engine import LEVELS, Decision

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)
# Why a policy sync failed: the store did not answer, or it held an entry serving refuses.
SYNC_ERRORS = ("unavailable", "invalid")


@dataclass(frozen=True)
class LivePolicy:
    """Where the served policy came from, for /metrics: source (`file`, `store`, `push`), the store's kind
    (`none`, `file`, `redis`), epoch seconds it was loaded, its `pushed_at` (ISO) and the store's last answer."""

    source: str | None
    store: str
    loaded_at: float | None
    pushed_at: str | None
    store_read_at: float | None


# Why a request was shed (`Metrics.count_shed`): the store or the slots (`no_slot`) against the process's own CPU
# (`waited`, `loop_lag`) — on-call's first question when `overload` answers rise.
SHED_CAUSES = ("no_slot", "waited", "loop_lag")


class Metrics:
    """Counters rendered by hand in the Prometheus text format (no client library on the hot path)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.fail_open: Counter[str] = Counter()
        self.latency_sum = 0.0
        self.latency_buckets = [0] * len(LATENCY_BUCKETS)
        self.policy_reloads: Counter[str] = Counter()
        self.decisions = 0
        self.cap_hits: Counter[str] = Counter()
        self.stream_stale = 0
        self.anonymous = 0
        self.policy_sync_errors: Counter[str] = Counter()
        self.shed: Counter[str] = Counter()  # `overload` answers by cause (SHED_CAUSES)

    def count_shed(self, cause: str) -> None:
        """One request shed at admission (answered `overload`), by cause: `no_slot` (every lookup slot stayed busy
        for the admission budget: the store is slow or the load beyond the slots), `waited` (the request reached its
        handler after the budget), `loop_lag` (the event loop runs late: the process is out of CPU)."""
        with self._lock:
            self.shed[cause] += 1

    def count_stream_stale(self) -> None:
        """One request decided from batch alone because the stream was stale."""
        with self._lock:
            self.stream_stale += 1

    def count_anonymous(self) -> None:
        """One request without a user id (answered with the policy's cohort-level decision)."""
        with self._lock:
            self.anonymous += 1

    def observe(self, seconds: float, reason: str | None, decisions: Sequence[Decision] = ()) -> None:
        """One answered decide request: its latency, its fail-open reason (if any) and its decisions."""
        hits = Counter(d.binding.level for d in decisions if is_hit(d))
        with self._lock:
            self.requests += 1
            self.latency_sum += seconds
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    self.latency_buckets[i] += 1
            if reason is not None:
                self.fail_open[reason.split(":")[0]] += 1
            self.decisions += len(decisions)
            self.cap_hits.update(hits)

    def render(
        self, policy_version: str | None, decision_log: DecisionLog | None = None, live: LivePolicy | None = None
    ) -> str:
        """The `/metrics` page: these counters, the policy served (and where from) and the decision log's rows."""
        with self._lock:
            lines = [
                "# HELP freqcap_decide_requests_total Decision requests answered.",
                "# TYPE freqcap_decide_requests_total counter",
                f"freqcap_decide_requests_total {self.requests}",
                "# HELP freqcap_decide_fail_open_total Decision requests answered fail-open, by reason.",
                "# TYPE freqcap_decide_fail_open_total counter",
            ]
            for reason in sorted(
                set(self.fail_open) | {"timeout", "store_error", "internal_error", "no_policy", "overload"}
            ):
                lines.append(f'freqcap_decide_fail_open_total{{reason="{reason}"}} {self.fail_open[reason]}')
            lines += [
                "# HELP freqcap_decide_shed_total Requests shed at admission (answered overload), by cause.",
                "# TYPE freqcap_decide_shed_total counter",
            ]
            for cause in SHED_CAUSES:
                lines.append(f'freqcap_decide_shed_total{{cause="{cause}"}} {self.shed[cause]}')
            lines += [
                "# HELP freqcap_decide_latency_seconds Time to answer a decision request (server side).",
                "# TYPE freqcap_decide_latency_seconds histogram",
            ]
            for bound, count in zip(LATENCY_BUCKETS, self.latency_buckets, strict=True):
                lines.append(f'freqcap_decide_latency_seconds_bucket{{le="{bound}"}} {count}')
            lines += [
                f'freqcap_decide_latency_seconds_bucket{{le="+Inf"}} {self.requests}',
                f"freqcap_decide_latency_seconds_sum {self.latency_sum:.6f}",
                f"freqcap_decide_latency_seconds_count {self.requests}",
                "# HELP freqcap_decisions_total Candidate decisions made (not counting fail-open answers).",
                "# TYPE freqcap_decisions_total counter",
                f"freqcap_decisions_total {self.decisions}",
                "# HELP freqcap_cap_hits_total Candidate decisions whose binding constraint was reached, by level.",
                "# TYPE freqcap_cap_hits_total counter",
            ]
            for level in LEVELS:
                lines.append(f'freqcap_cap_hits_total{{level="{level}"}} {self.cap_hits[level]}')
            lines += [
                "# HELP freqcap_decide_stream_stale_total Requests decided from batch alone: the stream was stale.",
                "# TYPE freqcap_decide_stream_stale_total counter",
                f"freqcap_decide_stream_stale_total {self.stream_stale}",
                "# HELP freqcap_decide_anonymous_total Requests without a user id (cohort-level decision, no lookup).",
                "# TYPE freqcap_decide_anonymous_total counter",
                f"freqcap_decide_anonymous_total {self.anonymous}",
            ]
            lines += [
                "# HELP freqcap_policy_reloads_total Policy pushes (ok, invalid) and loads from the store (synced).",
                "# TYPE freqcap_policy_reloads_total counter",
            ]
            for result in ("ok", "invalid", "synced"):
                lines.append(f'freqcap_policy_reloads_total{{result="{result}"}} {self.policy_reloads[result]}')
            lines += [
                "# HELP freqcap_policy_sync_errors_total Failed reads of the live-policy store, by kind.",
                "# TYPE freqcap_policy_sync_errors_total counter",
            ]
            for kind in SYNC_ERRORS:
                lines.append(f'freqcap_policy_sync_errors_total{{kind="{kind}"}} {self.policy_sync_errors[kind]}')
            if policy_version is not None:
                source, store = (live.source or "unknown", live.store) if live else ("unknown", "none")
                labels = f'version="{_escape(policy_version)}",source="{source}",store="{store}"'
                lines += [
                    "# HELP freqcap_policy_info The policy version being served, where it came from, the store.",
                    "# TYPE freqcap_policy_info gauge",
                    f"freqcap_policy_info{{{labels}}} 1",
                ]
            lines += _live_policy_lines(live)
        if decision_log is not None:
            lines += [
                "# HELP freqcap_decision_log_rows_total Decision log rows, by outcome.",
                "# TYPE freqcap_decision_log_rows_total counter",
                f'freqcap_decision_log_rows_total{{outcome="written"}} {decision_log.written}',
                f'freqcap_decision_log_rows_total{{outcome="dropped"}} {decision_log.dropped}',
            ]
        return "\n".join(lines) + "\n"


def _live_policy_lines(live: LivePolicy | None) -> list[str]:
    """Ages of the served policy (since pushed, since loaded here) and of the store's last answer, in seconds."""
    if live is None:
        return []
    now = time.time()
    pushed = _epoch(live.pushed_at)
    ages = [
        (
            "freqcap_policy_age_seconds",
            "Seconds since the served policy was pushed (else since loaded here).",
            pushed if pushed is not None else live.loaded_at,
        ),
        (
            "freqcap_policy_loaded_age_seconds",
            "Seconds since this process swapped in the served policy.",
            live.loaded_at,
        ),
        (
            "freqcap_policy_store_read_age_seconds",
            "Seconds since the live-policy store last answered.",
            live.store_read_at,
        ),
    ]
    lines = []
    for name, text, since in ages:
        if since is not None:
            lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {max(0.0, now - since):.3f}"]
    return lines


def _epoch(iso: str | None) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else None
    except ValueError:
        return None


def _escape(text: str) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

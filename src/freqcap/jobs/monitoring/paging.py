"""`paging_job`: the run's alarms delivered to the configured webhook receivers (Alertmanager or Slack format),
with repeats only after `monitoring.paging.repeat_interval`, resolve messages, retries, and a record of every
delivery (`freqcap.domain.monitoring.paging` decides what is due)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from freqcap.adapters.paging_store import PagingStore
from freqcap.adapters.webhook import post_json
from freqcap.config import Settings, parse_duration
from freqcap.domain.monitoring.paging import Receiver, payload, plan_messages, record_delivery
from freqcap.jobs.monitoring.common import write_json
from freqcap.layout import DataLayout, MonitoringRun, parse_as_of

log = logging.getLogger(__name__)


def paging_job(
    collected: dict[str, Any], alarms: dict[str, Any], settings: Settings, sleep: Callable[[float], None] = time.sleep
) -> dict[str, Any]:
    """Send what is due to every receiver; writes `paging.json` in the run and never raises for a receiver that
    is down: the failure is logged (ERROR), recorded in `deliveries.jsonl`, and the message stays pending."""
    cfg = settings.monitoring.paging
    as_of = parse_as_of(alarms["as_of"])
    out = MonitoringRun(Path(collected["run_dir"])).paging
    if not cfg.receivers:
        result = {"as_of": as_of.isoformat(), "receivers": [], "messages": [], "suppressed": [], "failed": 0}
        write_json(out, result)
        return {**result, "paging_path": str(out)}
    store = PagingStore(DataLayout.of(settings).paging_dir)
    receivers = [Receiver(r.name, r.format, r.min_severity) for r in cfg.receivers]
    urls = {r.name: r.url for r in cfg.receivers}
    plan = plan_messages(
        store.load(), alarms, receivers, as_of, parse_duration(cfg.repeat_interval).total_seconds(), cfg.send_resolved
    )
    state = plan.state
    sent: list[dict[str, Any]] = []
    for message in plan.messages:
        delivery = post_json(
            urls[message.receiver],
            payload(message, cfg.page_url),
            timeout=cfg.timeout_seconds,
            attempts=cfg.attempts,
            backoff=cfg.backoff_seconds,
            backoff_max=cfg.backoff_max_seconds,
            sleep=sleep,
        )
        state = record_delivery(state, message, delivery.ok, as_of)
        row = {
            "as_of": as_of.isoformat(),
            "receiver": message.receiver,
            "format": message.format,
            "rule": message.rule,
            "status": message.status,
            "alerts": [f"{a.status}:{a.key}" + (" (reminder)" if a.repeat else "") for a in message.alerts],
            "ok": delivery.ok,
            "attempts": delivery.attempts,
            "http_status": delivery.status,
            "error": delivery.error,
            "seconds": round(delivery.seconds, 3),
        }
        sent.append(row)
        if delivery.ok:
            log.info("paged %s: %s %s (%d alerts)", message.receiver, message.status, message.rule, len(message.alerts))
        else:  # loud: someone should have been paged and was not (the message is retried next run)
            log.error(
                "PAGING FAILED to %s: %s %s after %d attempts (%s); kept pending for the next run",
                message.receiver, message.status, message.rule, delivery.attempts, delivery.error,
            )  # fmt: skip
    store.record(sent)  # before the state: a crash in between re-sends (at least once), never skips
    store.save(state)
    pending = sum(1 for told in state.values() for e in told.values() if e.get("last_sent_at") is None)
    result = {
        "as_of": as_of.isoformat(),
        "receivers": [r.name for r in receivers],
        "messages": sent,
        "suppressed": [f"{r}:{k}" for r, k in plan.suppressed],
        "failed": sum(not m["ok"] for m in sent),
        "pending": pending,
    }
    write_json(out, result)
    return {**result, "paging_path": str(out)}

"""Publishing a proposed policy to serving: the publish DAG's task functions (plain JSON values in and out).

champion's policy (MLflow) → guardrails (schema, caps in bounds, change vs live, projected cap-hit change, and the
what-if forecast's projected conversions and reach, `freqcap.jobs.forecast`) →
push to serving's admin endpoint → verify that serving reports the new version.

Failures are typed for the DAG: `GuardrailViolation` and `PolicyRejected` will not improve on retry (the task fails
at once); `ServingUnreachable` does (the task retries; serving keeps its current policy meanwhile).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from freqcap.adapters.feast.snapshots import list_snapshots
from freqcap.adapters.mlflow.tracking import CHAMPION, alias_version, client, configure
from freqcap.adapters.serving_client import PolicyRejected, ServingClient, ServingUnreachable
from freqcap.config import Settings
from freqcap.domain.features import USER_TABLE, tier_tables
from freqcap.domain.policy import load_policy, parse_policy
from freqcap.domain.policy.guardrails import (
    GuardrailLimits,
    GuardrailReport,
    check_guardrails,
    count_column,
    feature_windows,
)
from freqcap.errors import FreqcapError
from freqcap.jobs.forecast import forecast_for_publish
from freqcap.layout import DataLayout, offline_root

log = logging.getLogger(__name__)

__all__ = [
    "GuardrailViolation",
    "NoChampion",
    "PolicyRejected",
    "ServingUnreachable",
    "check_guardrails_job",
    "fetch_champion_policy_job",
    "load_pair_states",
    "push_policy_job",
    "verify_policy_job",
]


class GuardrailViolation(FreqcapError):
    """The proposed policy failed a guardrail; the live policy stays."""


class NoChampion(FreqcapError):
    """No model version holds the `champion` alias (or it proposes no policy)."""


def publish_dir(settings: Settings) -> Path:
    return DataLayout.of(settings).publish_dir


def _client(settings: Settings) -> ServingClient:
    return ServingClient(
        settings.publish.serving_url,
        token=settings.serving.admin_token.get_secret_value() or None,
        timeout=settings.publish.timeout_seconds,
    )


def fetch_champion_policy_job(settings: Settings, registered_model: str) -> dict[str, Any]:
    """The policy proposed with the champion model: its run's `curves/policy.yaml`, checked against the version
    tag `policy_version` the training DAG put on the model version."""
    configure(settings)
    version = alias_version(settings, registered_model, CHAMPION)
    if version is None:
        raise NoChampion(f"no version of {registered_model!r} is marked {CHAMPION!r}: nothing to publish")
    tags = version.tags or {}
    tagged = tags.get("policy_version")
    if not tagged:
        raise NoChampion(f"{registered_model} v{version.version} ({CHAMPION}) has no policy_version tag")
    out = DataLayout.of(settings).publish_candidate_dir(version.version)
    out.mkdir(parents=True, exist_ok=True)
    local = client(settings).download_artifacts(version.run_id, "curves/policy.yaml", str(out))
    policy = load_policy(local)  # schema guardrail: an invalid document stops here, naming the field
    if policy.version != tagged:
        raise GuardrailViolation(
            f"run {version.run_id} holds policy {policy.version} but the model version is tagged {tagged}"
        )
    return {
        "registered_model": registered_model,
        "model_version": str(version.version),
        "run_id": version.run_id,
        "policy_version": policy.version,
        "policy_path": str(Path(local).resolve()),
        # why this version holds the alias: the champion gate's decision, as tagged on the version by training
        "gate": {"decision": tags.get("freqcap.gate"), "reason": tags.get("freqcap.gate_reason")},
    }


def load_pair_states(repo_dir: Path, settings: Settings):
    """Active (user, entity) pairs of the newest feature snapshot with the user's cohort and impression counts per
    window (`imp_<seconds>s`), for projecting cap hits; None when there is no snapshot yet."""
    root = offline_root(repo_dir)
    users = list_snapshots(root, USER_TABLE)
    if not users:
        return None
    frames = []
    con = duckdb.connect()
    try:
        for table in tier_tables(settings.features):
            snaps = list_snapshots(root, table.name)
            if not snaps:
                continue
            tier = settings.features.tier(table.level)
            counts = ", ".join(f"t.imp_{label} AS {count_column(sec)}" for label, sec in tier.window_seconds.items())
            frames.append(
                con.sql(
                    f"""
                    SELECT '{table.level}' AS level, coalesce(u.audience, 'unknown') AS audience,
                           coalesce(u.signal_tier, 'impression_only') AS signal_tier, {counts}
                    FROM read_parquet('{snaps[-1][1]}') t
                    LEFT JOIN read_parquet('{users[-1][1]}') u USING (user_id)
                    WHERE t.imp_{tier.longest_window} > 0  -- tombstones and click-only pairs are not exposures
                    """
                ).df()
            )
    finally:
        con.close()
    return pd.concat(frames, ignore_index=True) if frames else None


def check_guardrails_job(candidate: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Compare the proposed policy with the live one (fetched from serving) on every guardrail.

    Raises GuardrailViolation (with the report written beside the candidate) when any fails."""
    proposed = load_policy(candidate["policy_path"])
    current = _client(settings).current_policy()  # unreachable serving raises: retry later
    live = parse_policy(current["policy"]) if current else None
    windows = feature_windows(settings.features)
    pairs = load_pair_states(DataLayout.of(settings).feast_repo, settings)
    limits = GuardrailLimits(**settings.publish.guardrails.model_dump())
    report = check_guardrails(proposed, live, limits=limits, windows_by_level=windows, pairs=pairs)
    unchanged = live is not None and live.version == proposed.version
    # the what-if forecast (freqcap.jobs.forecast) adds its guardrail on projected conversions and reach
    forecast_check, forecast = forecast_for_publish(
        proposed, live, candidate, settings, skip="serving already runs this version" if unchanged else None
    )
    report = GuardrailReport((*report.checks, forecast_check))
    result = {
        **candidate,
        "live_version": live.version if live else None,
        "unchanged": unchanged,
        "guardrails": report.to_dict(),
        "forecast": forecast,
    }
    report_path = DataLayout.guardrails_report(Path(candidate["policy_path"]))
    report_path.write_text(json.dumps(result, indent=2, default=str))
    for check in report.checks:
        log.info("guardrail %s: %s — %s", check.name, "ok" if check.passed else "FAILED", check.detail)
    if not report.passed:
        raise GuardrailViolation(f"policy {proposed.version} not published: " + report.summary())
    return result


def push_policy_job(checked: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Load the checked policy into serving through the admin endpoint (a no-op when serving already has it)."""
    if checked.get("unchanged"):
        log.info("serving already runs policy %s: nothing to push", checked["policy_version"])
        return {**checked, "pushed": False}
    text = Path(checked["policy_path"]).read_text()
    answer = _client(settings).push_policy(text)
    if answer.get("policy_version") != checked["policy_version"]:
        raise PolicyRejected(
            f"serving answered version {answer.get('policy_version')}, expected {checked['policy_version']}"
        )
    log.info("pushed policy %s (previous %s)", answer["policy_version"], answer.get("previous_version"))
    return {**checked, "pushed": True, "previous_version": answer.get("previous_version")}


def verify_policy_job(pushed: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Wait until serving reports the published version, then record the publication in the model registry.

    Verified means `publish.verify_consecutive` answers in a row, `publish.verify_interval` s apart, report the
    version (any other answer starts the count again) before `publish.verify_seconds`: behind one address several
    workers or replicas answer in turn, and one that has not synced from the policy store yet reports the old
    version for up to `serving.policy_refresh` s. Each GET opens a new connection, so the answers come from
    whichever process accepts it, not from one kept-alive connection."""
    client = _client(settings)
    cfg = settings.publish
    want = pushed["policy_version"]
    deadline = time.monotonic() + cfg.verify_seconds
    agreeing, seen = 0, None
    while True:
        current = client.current_policy()
        seen = current["version"] if current else None
        agreeing = agreeing + 1 if seen == want else 0
        if agreeing >= cfg.verify_consecutive:
            break
        if time.monotonic() > deadline:
            raise ServingUnreachable(
                f"serving reports policy {seen}, expected {want} ({agreeing} of {cfg.verify_consecutive} answers in a "
                f"row agreed within {cfg.verify_seconds} s)"
            )
        time.sleep(cfg.verify_interval)
    published_at = datetime.now(UTC).isoformat()
    _tag_published(settings, pushed, published_at)
    record = {**pushed, "verified_version": seen, "published_at": published_at}
    out = DataLayout.of(settings).published_log
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as fh:
        fh.write(json.dumps(record, default=str) + "\n")
    return record


def _tag_published(settings: Settings, pushed: dict[str, Any], published_at: str) -> None:
    configure(settings)
    mc = client(settings)
    mc.set_model_version_tag(pushed["registered_model"], pushed["model_version"], "published_at", published_at)
    mc.set_model_version_tag(
        pushed["registered_model"], pushed["model_version"], "published_to", settings.publish.serving_url
    )

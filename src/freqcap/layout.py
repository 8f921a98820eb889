"""Where everything lives under the data directory, and how an as-of time is read and written.

This module owns the data layout: every other module asks it for a path under `data_dir` instead of joining one,
so the layout can change in one place and a newcomer finds every store by reading one file. A store that is given
a directory of its own (the Feast repo, the GX context, the Evidently workspace, the incident store, the decision
log) owns the files inside it. No I/O happens here.

    <data_dir>/
      raw/events/                    default input of the features and training DAGs (`freqcap simulate --out raw`)
      raw/users.parquet, ads.parquet optional side tables found next to an events directory
      runs/<stamp>/                  one features run: validation/, features/, features_validation.json,
                                     materialize.json
      feast/                         the Feast runtime repo: feature_store.yaml, registry, online store,
                                     offline/<table>/snapshot_<stamp>.parquet, offline/row_counts.json
      curves/<stamp>/                curves, caps, plots and the proposed policy of a training run
      training/<model>/<stamp>/      point-in-time training sets
      mlflow/                        embedded MLflow tracking DB (mlflow.db) and artifacts/
      publish/                       published.jsonl, candidates/v<N>/, one directory per publication attempt
      decision_log/                  serving's sampled decision log (unless `serving.decision_log_dir`)
      serving/live_policy.json       the live policy of the `file` policy store (`serving.policy_store: file`)
      monitoring/                    incidents, alarm history, paging/, on-call page, workspace/, runs/<stamp>/
      stream/                        the replay transport's dead letters
      secrets/                       the generated pseudonymization key (mode 0600) when none is configured
      pseudonymized/<digest>/        a raw events directory copied with pseudonymous user ids (events/, users.parquet,
                                     ads.parquet), what the training and monitoring jobs read
      gx/                            the Great Expectations Data Docs site
      privacy/forget_audit.jsonl     one record per `freqcap forget` request (no raw id)
      privacy/forget_requests/       the freqcap_forget DAG's drop folder (done/ and failed/ beside the pending files)

Every store here has a retention horizon (`retention.*` settings; `freqcap retention`, docs/operations/retention.md).

`<stamp>` is the as-of time in UTC as `YYYYMMDDTHHMMSSZ` (`stamp`); `parse_as_of` is the one reader of as-of
times given as text (DAG params, CLI options, XCom values).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
GUARDRAILS_REPORT = "guardrails.json"
FORECAST_TABLE = "forecast.csv"
FORECAST_PLOT = "forecast.png"


def parse_as_of(value: str | datetime) -> datetime:
    """An ISO-8601 time (a trailing Z allowed) as an aware UTC datetime; naive values are taken as UTC."""
    ts = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC)


def stamp(as_of: datetime | str) -> str:
    """The as-of time as a directory name: `20261001T000000Z` (UTC)."""
    return parse_as_of(as_of).strftime(STAMP_FORMAT)


def parse_stamp(text: str) -> datetime:
    """The inverse of `stamp`."""
    return datetime.strptime(text, STAMP_FORMAT).replace(tzinfo=UTC)


def users_path_for(events_dir: str | Path, users: str | Path | None = None) -> Path | None:
    """`users.parquet` next to the events directory (same parent folder) unless `users` names one."""
    if users is not None:
        return Path(users)
    candidate = Path(events_dir).resolve().parent / "users.parquet"
    return candidate if candidate.exists() else None


def ads_path_for(events_dir: str | Path) -> Path | None:
    """The optional ad catalog `ads.parquet` next to the events directory."""
    candidate = Path(events_dir).resolve().parent / "ads.parquet"
    return candidate if candidate.exists() else None


def feature_table_path(features_dir: str | Path, table: str) -> Path:
    """The Parquet file of feature table `table` (`user`, `user_ad`, ...) in a features output directory (one file
    per table, whichever engine wrote it)."""
    return Path(features_dir) / f"{table}.parquet"


@dataclass(frozen=True)
class FeaturesRun:
    """The files of one features run (`<data_dir>/runs/<stamp>/`)."""

    root: Path

    @property
    def validation_dir(self) -> Path:
        return self.root / "validation"

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    @property
    def features_report(self) -> Path:
        return self.root / "features_validation.json"

    @property
    def materialize_report(self) -> Path:
        return self.root / "materialize.json"


@dataclass(frozen=True)
class MonitoringRun:
    """The files of one monitoring run (`<data_dir>/monitoring/runs/<stamp>/`); its tasks pass `root` along."""

    root: Path

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def current_sample(self) -> Path:
        """The current window's rows for drift."""
        return self.root / "current.parquet"

    @property
    def reference_sample(self) -> Path:
        return self.root / "reference.parquet"

    @property
    def drift(self) -> Path:
        return self.root / "drift.json"

    @property
    def alarms(self) -> Path:
        return self.root / "alarms.json"

    @property
    def paging(self) -> Path:
        """What this run sent to the webhook receivers (messages, deliveries, suppressed repeats)."""
        return self.root / "paging.json"

    @property
    def page_context(self) -> Path:
        return self.root / "page_context.json"

    @property
    def page(self) -> Path:
        """This run's copy of the on-call page."""
        return self.root / "oncall.html"


@dataclass(frozen=True)
class DataLayout:
    """Every path under one data directory. Build it with `DataLayout.of(settings)`."""

    root: Path
    # Settings that move a directory out of the data directory (None: the default place under it).
    decision_log_override: Path | None = None
    workspace_override: Path | None = None

    @classmethod
    def of(cls, settings: Any) -> DataLayout:
        """The layout of `settings.data_dir` (resolved to an absolute path), honouring the directory settings."""
        serving = getattr(settings, "serving", None)
        monitoring = getattr(settings, "monitoring", None)
        log_dir = getattr(serving, "decision_log_dir", None)
        workspace = getattr(monitoring, "workspace_dir", None)
        return cls(
            Path(settings.data_dir).resolve(),
            Path(log_dir) if log_dir else None,
            Path(workspace).resolve() if workspace else None,
        )

    # -- inputs ----------------------------------------------------------------------------------------------
    @property
    def raw_dir(self) -> Path:
        return self.root / "raw"

    @property
    def events_dir(self) -> Path:
        """Default raw events directory of the DAGs."""
        return self.raw_dir / "events"

    # -- features runs and the Feast repo --------------------------------------------------------------------
    @property
    def runs_root(self) -> Path:
        """The features runs, one `<stamp>/` directory each."""
        return self.root / "runs"

    def features_run(self, as_of: datetime | str) -> FeaturesRun:
        return FeaturesRun(self.runs_root / stamp(as_of))

    @property
    def feast_repo(self) -> Path:
        return self.root / "feast"

    @property
    def offline_root(self) -> Path:
        return offline_root(self.feast_repo)

    @property
    def row_counts(self) -> Path:
        """The published runs' row counts per table, next to the snapshots (the feature gate's baseline)."""
        return self.offline_root / "row_counts.json"

    # -- training --------------------------------------------------------------------------------------------
    @property
    def curves_root(self) -> Path:
        """The curves of the training runs, one `<stamp>/` directory each."""
        return self.root / "curves"

    def curves_dir(self, as_of: datetime | str) -> Path:
        return self.curves_root / stamp(as_of)

    @property
    def training_base(self) -> Path:
        """Every model's training sets (`<model>/<stamp>/`)."""
        return self.root / "training"

    def training_root(self, model: str) -> Path:
        return self.training_base / model

    def training_dir(self, model: str, as_of: datetime | str) -> Path:
        return self.training_root(model) / stamp(as_of)

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def mlflow_db(self) -> Path:
        return self.mlflow_dir / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    # -- publishing and serving ------------------------------------------------------------------------------
    @property
    def publish_dir(self) -> Path:
        return self.root / "publish"

    @property
    def published_log(self) -> Path:
        """One JSON line per successful publication."""
        return self.publish_dir / "published.jsonl"

    def publish_candidate_dir(self, version: str | int) -> Path:
        """Where the champion's policy of model version `version` is downloaded."""
        return self.publish_dir / "candidates" / f"v{version}"

    @staticmethod
    def guardrails_report(candidate_policy: Path) -> Path:
        """The guardrail report written beside a downloaded candidate policy."""
        return Path(candidate_policy).with_name(GUARDRAILS_REPORT)

    @staticmethod
    def forecast_table(candidate_policy: Path) -> Path:
        """The what-if forecast (candidate vs live, per cohort × level) written beside a candidate policy."""
        return Path(candidate_policy).with_name(FORECAST_TABLE)

    @staticmethod
    def forecast_plot(candidate_policy: Path) -> Path:
        """The forecast's plot, beside the table."""
        return Path(candidate_policy).with_name(FORECAST_PLOT)

    @property
    def live_policy(self) -> Path:
        """The `file` policy store: the last pushed policy every serving process on this host reads."""
        return self.root / "serving" / "live_policy.json"

    @property
    def decision_log_dir(self) -> Path:
        return self.decision_log_override or self.root / "decision_log"

    # -- monitoring ------------------------------------------------------------------------------------------
    @property
    def monitoring_dir(self) -> Path:
        return self.root / "monitoring"

    @property
    def monitoring_runs_root(self) -> Path:
        """The monitoring runs, one `<stamp>/` directory each."""
        return self.monitoring_dir / "runs"

    def monitoring_run(self, as_of: datetime | str) -> MonitoringRun:
        return MonitoringRun(self.monitoring_runs_root / stamp(as_of))

    @property
    def oncall_page(self) -> Path:
        """The latest on-call page."""
        return self.monitoring_dir / "oncall.html"

    @property
    def drift_report(self) -> Path:
        """The latest Evidently drift report (HTML)."""
        return self.monitoring_dir / "drift_report.html"

    @property
    def incidents_dir(self) -> Path:
        """The incident store's directory (open incidents and the alarm history)."""
        return self.monitoring_dir

    @property
    def paging_dir(self) -> Path:
        """Paging: what each webhook receiver was told (`state.json`) and every delivery (`deliveries.jsonl`)."""
        return self.monitoring_dir / "paging"

    @property
    def workspace_dir(self) -> Path:
        """The Evidently workspace (`make ui` serves it)."""
        return self.workspace_override or self.monitoring_dir / "workspace"

    # -- secrets and privacy ---------------------------------------------------------------------------------
    @property
    def pseudonym_key_file(self) -> Path:
        """The generated pseudonymization key (mode 0600) used when no key is configured."""
        return self.root / "secrets" / "pseudonym_keys.yaml"

    @property
    def privacy_dir(self) -> Path:
        return self.root / "privacy"

    @property
    def forget_audit(self) -> Path:
        """One JSON line per forget request: time, request id, hashed subjects, counts per store (no raw id)."""
        return self.privacy_dir / "forget_audit.jsonl"

    @property
    def forget_requests(self) -> Path:
        """The drop folder of deletion requests the `freqcap_forget` DAG picks up (`*.json`, `*.txt`)."""
        return self.privacy_dir / "forget_requests"

    def store_of(self, path: Path) -> str:
        """Which store a file under the data directory belongs to, by where it lives (`other` when none)."""
        try:
            parts = Path(path).absolute().relative_to(self.root).parts
        except ValueError:
            return "outside_data_dir"
        first = parts[0] if parts else ""
        if first == "raw" and len(parts) > 2 and parts[1] == "truth":
            return "simulation_truth"
        if first == "raw":
            return "users" if parts[-1] == "users.parquet" else "raw_events"
        if first == "runs" and len(parts) > 3 and parts[2] == "validation":
            return "quarantine" if parts[-1].startswith("quarantine") else "clean_events"
        if first == "runs":
            return "feature_runs"
        if first == "feast":
            return "offline_snapshots" if len(parts) > 1 and parts[1] == "offline" else "feast_repo"
        named = {
            "training": "training_sets",
            "monitoring": "monitoring",
            "curves": "curves",
            "mlflow": "mlflow",
            "decision_log": "decision_log",
            "stream": "stream_dead_letters",
            "gx": "data_docs",
            "pseudonymized": "pseudonymized_events",
        }
        return named.get(first, "other")

    @property
    def pseudonymized_root(self) -> Path:
        """Pseudonymized copies of raw event directories, one folder per source and content
        (`freqcap.jobs.privacy.pseudonymous_events`)."""
        return self.root / "pseudonymized"

    # -- streaming and data docs -----------------------------------------------------------------------------
    @property
    def stream_dead_letters(self) -> Path:
        return self.root / "stream" / "dead_letter.jsonl"

    @property
    def gx_dir(self) -> Path:
        """The Great Expectations file context of the Data Docs site."""
        return gx_dir(self.root)


def offline_root(feast_repo: Path) -> Path:
    """The offline snapshots of a Feast runtime repo (`<repo>/offline/<table>/snapshot_<stamp>.parquet`)."""
    return Path(feast_repo) / "offline"


def gx_dir(docs_root: Path) -> Path:
    """The GX context of a Data Docs root (`<root>/gx`): the data directory, or a test's own folder."""
    return Path(docs_root) / "gx"

"""Where monitoring keeps its incidents between runs: open incidents and the alarm history, as files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from freqcap.domain.monitoring.alarms import AlarmOutcome


class IncidentStore:
    """Open incidents (`incidents.json`, replaced atomically) and the event history (`alarms.jsonl`)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.state_path = self.directory / "incidents.json"
        self.history_path = self.directory / "alarms.jsonl"

    def load(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return {"last_as_of": None, "open": {}}
        try:
            return json.loads(self.state_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"incident state {self.state_path} is not valid JSON: {exc}") from exc

    def commit(self, outcome: AlarmOutcome) -> None:
        """Append the outcome's events to the history, then replace the state (a crash in between can only
        repeat history lines on retry, never lose an open incident)."""
        if outcome.stale:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        events = [{"event": "fired", "at": outcome.as_of, **i.to_dict()} for i in outcome.fired]
        events += [{"event": "resolved", "at": outcome.as_of, **r} for r in outcome.resolved]
        if events:
            with self.history_path.open("a") as fh:
                for e in events:
                    fh.write(json.dumps(e, default=str) + "\n")
        tmp = self.state_path.with_name(f".{self.state_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(outcome.state, indent=2, default=str))
        tmp.replace(self.state_path)

    def history(self) -> list[dict[str, Any]]:
        if not self.history_path.exists():
            return []
        return [json.loads(line) for line in self.history_path.read_text().splitlines() if line]

"""Where paging keeps what each receiver was told (`state.json`) and every delivery attempt (`deliveries.jsonl`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class PagingStore:
    """Per receiver and incident: firing or resolved, when last delivered (`freqcap.domain.monitoring.paging`)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.state_path = self.directory / "state.json"
        self.deliveries_path = self.directory / "deliveries.jsonl"

    def load(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return {}
        try:
            return json.loads(self.state_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"paging state {self.state_path} is not valid JSON: {exc}") from exc

    def save(self, state: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(f".{self.state_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True, default=str))
        tmp.replace(self.state_path)

    def record(self, rows: list[dict[str, Any]]) -> None:
        """Append delivery attempts (one line each; no URL in them)."""
        if not rows:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.deliveries_path.open("a") as fh:
            for row in rows:
                fh.write(json.dumps(row, default=str) + "\n")

    def deliveries(self) -> list[dict[str, Any]]:
        if not self.deliveries_path.exists():
            return []
        return [json.loads(line) for line in self.deliveries_path.read_text().splitlines() if line]

"""Result tables: the same rows as CSV (for spreadsheets) and JSON (for scripts)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence


def write_table(rows: Sequence[dict[str, Any]], folder: Path, stem: str) -> tuple[Path, Path]:
    """``folder/stem.csv`` and ``folder/stem.json`` holding ``rows`` (all with the same keys)."""
    if not rows:
        raise ValueError(f"no rows to write to {folder / stem}.csv")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = folder / f"{stem}.csv", folder / f"{stem}.json"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    json_path.write_text(json.dumps(list(rows), indent=2) + "\n")
    return csv_path, json_path


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of ``columns`` (floats to 4 decimals)."""

    def cell(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[name]) for name in columns) + " |" for row in rows]
    return "\n".join(lines)


def report_header(title: str, command: str) -> list[str]:
    """The first lines of a Markdown report: its title and the command that wrote it."""
    return [f"# {title}", "", "Command:", "", "```", command, "```", ""]

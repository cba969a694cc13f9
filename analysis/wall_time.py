"""Wall time of an analysis's parts, summed over every command that built its folder.

A resumable analysis runs over several commands (a stop, then the same command again), so the
time one command measured is not what a part cost. Each part's seconds are added to
``OUT/wall_time.json`` as soon as the part ends, and a report states the sums.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Iterator

from utility.atomic_write import write_text_atomic


class WallTime:
    """Seconds per part name, read from and written back to one JSON file.

    ``complete``: whether the count started with the folder; a folder made before it counted
    (``complete=False`` when the file is first written) keeps saying that its sums leave out
    what was done before.
    """

    def __init__(self, path: Path, complete: bool = True, counting: bool = True):
        self.path = path
        self.seconds: dict[str, float] = {}
        self.complete = complete
        self.counting = counting  # False: read the sums, add nothing (a command that only reports)
        if path.is_file():
            try:
                stored = json.loads(path.read_text())
                self.seconds, self.complete = dict(stored["seconds"]), bool(stored["complete"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{path} is damaged ({error!r}): delete it to count the wall time anew") from None

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Adds the wall time of the ``with`` block to ``name``, also when it stops with an error
        or Ctrl-C (the work done until then was spent)."""
        if not self.counting:
            yield
            return
        started = time.monotonic()
        try:
            yield
        finally:
            self.add(name, time.monotonic() - started)

    def add(self, name: str, seconds: float) -> None:
        """Adds ``seconds`` to ``name`` and writes the sums (nothing when not ``counting``)."""
        if not self.counting:
            return
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        stored = {"seconds": self.seconds, "complete": self.complete}
        write_text_atomic(self.path, json.dumps(stored, indent=2) + "\n")

    def table(self) -> list[dict[str, object]]:
        """One row per part, in the order the parts first ran, and their total."""
        rows: list[dict[str, object]] = [{"part": name, "minutes": round(s / 60, 1)} for name, s in self.seconds.items()]
        return rows + [{"part": "total", "minutes": round(sum(self.seconds.values()) / 60, 1)}]

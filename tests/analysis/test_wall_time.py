"""analysis/wall_time.py: the seconds of each part add up over the commands that built a folder."""

from __future__ import annotations

import json

import pytest

from analysis.wall_time import WallTime


def test_parts_add_up_over_commands_and_an_interrupted_part_counts(tmp_path):
    path = tmp_path / "wall_time.json"
    first = WallTime(path)
    with first.part("probes"):
        pass
    with pytest.raises(KeyboardInterrupt), first.part("pretraining"):
        raise KeyboardInterrupt  # a stopped part still spent its time
    spent = json.loads(path.read_text())["seconds"]
    assert set(spent) == {"probes", "pretraining"} and all(value >= 0 for value in spent.values())
    second = WallTime(path)  # the next command goes on from the sums on disk
    second.seconds["probes"] = 90.0
    with second.part("probes"):
        pass
    assert 90.0 <= json.loads(path.read_text())["seconds"]["probes"] < 91.0
    table = second.table()
    assert [row["part"] for row in table] == ["probes", "pretraining", "total"] and table[0]["minutes"] == 1.5


@pytest.mark.parametrize("text", ["{not json", "[]", '{"probes": 3}'])
def test_a_damaged_file_is_named_with_the_fix(text, tmp_path):
    path = tmp_path / "wall_time.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"wall_time.json is damaged .*delete it"):
        WallTime(path)


def test_a_count_that_started_late_says_so_for_good(tmp_path):
    path = tmp_path / "wall_time.json"
    with WallTime(path, complete=False).part("probes"):
        pass
    assert WallTime(path, complete=True).complete is False  # the file remembers

"""Analysis commands own their output folder and read their cells' checkpoints as the runners
do: a second analysis on a folder in use is refused, a damaged newest checkpoint is named."""

from __future__ import annotations

import pytest

from analysis import layerwise, report
from utility.integrity import DamagedCheckpoint
from utility.experiment_lock import ExperimentInUse, ExperimentLock

STEPS = ["-o", "runner.total_steps=4", "runner.eval_step=2", "runner.log_step=1", "runner.max_keep=5"]


def test_an_analysis_on_a_folder_in_use_is_refused(tmp_path):
    with ExperimentLock(tmp_path / "out"):  # what a running analysis (or training run) holds
        with pytest.raises(ExperimentInUse, match="is in use by"):
            args = ["-u", "fbank", "-d", "speaker_utterance", "--stages", "weighted_sum", "-p", str(tmp_path / "out")]
            report.main(args + STEPS)
    assert not (tmp_path / "out" / "cells").exists(), "nothing written by the refused run"


def test_a_damaged_newest_cell_checkpoint_is_named_and_skipped_on_request(tmp_path):
    argv = ["-u", "fbank", "-d", "speaker_utterance", "-p", str(tmp_path)] + STEPS
    layerwise.main(argv)
    cell = tmp_path / "cells" / "speaker_utterance" / "fbank" / "weighted_sum"
    steps = sorted(cell.glob("states-*.ckpt"))
    assert len(steps) >= 2, "an older intact checkpoint to fall back on"
    (cell / "results.json").unlink()  # as if the run had stopped after its last checkpoint
    newest = steps[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.raises(DamagedCheckpoint, match=rf"{newest.name}.*--skip-damaged"):
        layerwise.main(argv)
    paths = layerwise.main(argv + ["--skip-damaged"])
    assert (cell / "results.json").is_file() and paths["csv"].is_file()
    assert (cell / f"{newest.name}.damaged").is_file(), "the damaged file is set aside, not reused"

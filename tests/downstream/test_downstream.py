"""Every task folder end to end through ``run_downstream.main``: train, then evaluate the
best checkpoint, resume, inference, drop-in task folders. Tiny settings on the demo corpus."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import soundfile
import torch

import run_downstream
from conftest import REPO, tiny_config
from downstream.discovery import TASKS_DIR, available_tasks
from downstream.probe_checkpoint import read_probe_checkpoint
from upstream import Upstream, save_upstream

DEMO = REPO / "data" / "demo"

# Few steps, small batches, small heads: each run takes seconds on two cores.
TINY = {
    "runner": [
        "runner.total_steps=4",
        "runner.eval_step=2",
        "runner.log_step=2",
        "runner.batch_size=3",
        "runner.eval_batch_size=12",
    ],
    "phone_1hidden": ["expert.hidden_sizes=[32]"],
    "phone_2hidden": ["expert.hidden_sizes=[32,32]"],
    "phone_ctc": ["expert.rnn_hidden=16"],
    "example": ["data.train_utterances=6", "data.dev_utterances=3", "data.test_utterances=3"],
}
TASKS = ["phone_linear", "phone_1hidden", "phone_2hidden", "phone_ctc", "speaker_utterance", "speaker_frame", "example"]


def tiny_overrides(task: str) -> list[str]:
    return TINY["runner"] + TINY.get(task, [])


def train(task: str, expdir: Path, *extra: str, upstream: list[str] = ("-u", "fbank")) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random-weight upstream warnings
        return run_downstream.main([*upstream, "-d", task, "-p", str(expdir), "-o", *tiny_overrides(task), *extra])


def test_the_shipped_task_folders_are_all_discovered():
    assert set(TASKS) <= set(available_tasks())


@pytest.mark.parametrize("task", TASKS)
def test_task_trains_then_evaluate_reproduces_the_best_dev_metric(task, tmp_path):
    expdir = tmp_path / task
    results = train(task, expdir)
    written = json.loads((expdir / "results.json").read_text())
    assert written == json.loads(json.dumps(results))
    metric = written["metric"]
    assert written["task"] == task and written["upstream"] == "fbank" and written["steps"] == 4
    assert written["best_step"] in (2, 4)
    assert math.isfinite(written["dev"]["loss"]) and math.isfinite(written["test"]["loss"])
    assert 0.0 <= written["test"][metric] <= (1.0 if metric == "accuracy" else 10.0)
    # The best checkpoint is the one of the best dev score, and evaluate reproduces it exactly.
    best = read_probe_checkpoint(expdir / "best.ckpt")
    assert best["step"] == written["best_step"]
    evaluated = run_downstream.main(["-m", "evaluate", "-e", str(expdir), "-t", "dev"])
    assert evaluated["dev"][metric] == written["dev"][metric]
    assert evaluated["dev"]["loss"] == pytest.approx(written["dev"]["loss"], rel=1e-6)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random 2-layer AALBERT (hidden 32) saved as an upstream checkpoint."""
    torch.manual_seed(0)
    return save_upstream(Upstream(tiny_config()), tmp_path_factory.mktemp("upstream") / "tiny.ckpt", name="tiny_aalbert")


def test_tiny_transformer_checkpoint_one_layer(tiny_checkpoint, tmp_path):
    results = train("speaker_utterance", tmp_path / "exp", "-l", "-1", upstream=["-k", str(tiny_checkpoint)])
    assert results["upstream"] == "tiny" and results["upstream_checkpoint"] == str(tiny_checkpoint)
    assert results["layer"] == "layer_2" and results["layer_weights"] == [0.0, 0.0, 1.0]
    # A frozen upstream with its own checkpoint is not copied into the probe checkpoint.
    assert "upstream" not in read_probe_checkpoint(tmp_path / "exp" / "best.ckpt")["weights"]
    evaluated = run_downstream.main(["-m", "evaluate", "-e", str(tmp_path / "exp"), "-t", "dev"])
    assert evaluated["dev"]["accuracy"] == results["dev"]["accuracy"]


def test_weighted_sum_and_fine_tuning_train_the_right_weights(tiny_checkpoint, tmp_path):
    results = train("speaker_frame", tmp_path / "exp", "-f", upstream=["-k", str(tiny_checkpoint)])
    assert results["fine_tune"] and results["layer"] == "weighted_sum"
    weights = results["layer_weights"]
    assert len(weights) == 3 and sum(weights) == pytest.approx(1.0)
    assert weights != pytest.approx([1 / 3] * 3, abs=1e-6)  # the learnable weights moved
    best = read_probe_checkpoint(tmp_path / "exp" / "best.ckpt")["weights"]
    original = torch.load(tiny_checkpoint, weights_only=True)["upstream"]["state_dict"]
    # The fine-tuned encoder travels with the probe and differs from the one it started from.
    assert set(best["upstream"]) == set(original)
    assert any(not torch.equal(best["upstream"][k], original[k]) for k in original)


def test_resume_continues_exactly(tmp_path):
    straight = train("speaker_frame", tmp_path / "straight")
    first = train("speaker_frame", tmp_path / "resumed", "runner.total_steps=2")
    assert first["steps"] == 2
    resumed = run_downstream.main(["-e", str(tmp_path / "resumed"), "-o", "runner.total_steps=4"])
    assert resumed["steps"] == 4
    a = read_probe_checkpoint(tmp_path / "straight" / "states-00000004.ckpt")
    b = read_probe_checkpoint(tmp_path / "resumed" / "states-00000004.ckpt")
    for part in a["weights"]:
        for key, value in a["weights"][part].items():
            assert torch.equal(value, b["weights"][part][key]), f"{part}.{key} differs after resume"
    assert resumed["dev"] == straight["dev"] and resumed["best_step"] == straight["best_step"]
    # Resuming a finished run does nothing and says so.
    again = run_downstream.main(["-e", str(tmp_path / "resumed")])
    assert again["steps"] == 4


def test_train_proportion_is_recorded_and_inference_names_one_speaker(tmp_path):
    results = train("speaker_utterance", tmp_path / "exp", "runner.train_proportion=0.1")
    assert results["train_proportion"] == 0.1
    # 10 speakers x 4 training utterances: 10 % would be 4, but every speaker keeps one.
    assert results["train_utterances"] == 10
    audio = sorted((DEMO / "train-clean-100").rglob("*.flac"))[0]
    speakers = run_downstream.main(["-m", "inference", "-e", str(tmp_path / "exp"), "-i", str(audio)])
    known = read_probe_checkpoint(tmp_path / "exp" / "best.ckpt")["label_names"]
    assert len(speakers) == 1 and len(speakers[0]) == 1 and speakers[0][0] in known


def test_inference_writes_a_label_per_frame(tmp_path):
    train("phone_linear", tmp_path / "phones", "runner.train_proportion=0.2")
    audio = sorted((DEMO / "test-clean").rglob("*.flac"))[:2]
    out = tmp_path / "phones.txt"
    frames = run_downstream.main(
        ["-m", "inference", "-e", str(tmp_path / "phones"), "-i", *map(str, audio), "--output", str(out)]
    )
    lines = out.read_text().splitlines()
    assert lines[0].startswith("# phone_linear (fbank): one label per 10 ms frame")
    assert [line.split("\t")[0] for line in lines[1:]] == list(map(str, audio))
    phones = set((DEMO / "phones.txt").read_text().split()[::2])
    assert len(frames) == 2 and set(frames[0]) <= phones
    assert len(frames[0]) == len(lines[1].split("\t")[1].split())
    # fbank (Kaldi, snip_edges): 1 + (samples - 400) // 160 frames.
    samples = soundfile.info(str(audio[0])).frames
    assert len(frames[0]) == 1 + (samples - 400) // 160


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_a_new_task_folder_runs_without_touching_the_core(tmp_path):
    before = tree_digest(TASKS_DIR)
    tasks = tmp_path / "tasks"
    shutil.copytree(TASKS_DIR / "example", tasks / "my_tones", ignore=shutil.ignore_patterns("__pycache__"))
    # The new task changes its expert: a wider detector, reading its own config section.
    config = (tasks / "my_tones" / "config.yaml").read_text() + "expert:\n  hidden_size: 8\n"
    (tasks / "my_tones" / "config.yaml").write_text(config)
    results = run_downstream.main(
        [
            "-u",
            "fbank",
            "-d",
            "my_tones",
            "--tasks-dir",
            str(tasks),
            "-p",
            str(tmp_path / "exp"),
            "-o",
            *tiny_overrides("example"),
        ]
    )
    assert results["task"] == "my_tones" and math.isfinite(results["test"]["loss"])
    best = read_probe_checkpoint(tmp_path / "exp" / "best.ckpt")
    assert best["weights"]["expert"]["detector.1.weight"].shape == (8, 240)
    assert tree_digest(TASKS_DIR) == before


def test_two_process_ddp_run_matches_a_single_process_evaluation(tmp_path):
    """torchrun with gloo on the CPU: each process trains on its shard and dev statistics are
    summed over both; evaluating the best checkpoint alone must give the same metric."""
    expdir = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "run_downstream.py",
        "-u",
        "fbank",
        "-d",
        "speaker_utterance",
        "-p",
        str(expdir),
        "--device",
        "cpu",
        "-o",
        *tiny_overrides("speaker_utterance"),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((expdir / "results.json").read_text())
    assert results["steps"] == 4
    evaluated = run_downstream.main(["-m", "evaluate", "-e", str(expdir), "-t", "dev"])
    assert evaluated["dev"]["accuracy"] == results["dev"]["accuracy"]


def test_standardized_speaker_probe_trains_and_keeps_its_statistics(tmp_path):
    results = train("speaker_utterance", tmp_path / "exp", "expert.standardize=true")
    state = read_probe_checkpoint(tmp_path / "exp" / "best.ckpt")["weights"]["expert"]
    assert "standardizer.running_mean" in state and "standardizer.weight" not in state  # nothing learned
    assert state["standardizer.running_mean"].abs().sum() > 0  # statistics gathered while training
    evaluated = run_downstream.main(["-m", "evaluate", "-e", str(tmp_path / "exp"), "-t", "dev"])
    assert evaluated["dev"]["accuracy"] == results["dev"]["accuracy"]


def test_feature_standardizer_handles_a_one_utterance_batch():
    from downstream.heads.layers import FeatureStandardizer

    standardizer = FeatureStandardizer(3)
    batch = torch.tensor([[1.0, 2.0, 3.0], [3.0, 6.0, 9.0]])
    standardized = standardizer(batch)
    assert torch.allclose(standardized, torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]), atol=1e-3)
    single = standardizer(batch[:1])  # training mode, one item: the running statistics
    standardizer.eval()
    assert torch.equal(single, standardizer(batch[:1]))


def test_a_pooled_probe_on_per_utterance_normalised_features_stops_with_the_reason(tmp_path):
    # mel's per-utterance CMVN makes every utterance's mean frame zero: nothing to tell apart.
    with pytest.raises(ValueError, match="mean-pooled features are the same.*per-utterance CMVN.*'mel_raw'"):
        train("speaker_utterance", tmp_path / "mel", upstream=["-u", "mel"])
    # The same features without CMVN pool to different vectors and train.
    results = train("speaker_utterance", tmp_path / "mel_raw", upstream=["-u", "mel_raw"])
    assert results["steps"] == 4


def _own_example_task(tmp_path: Path, old: str, new: str) -> Path:
    """downstream/example copied to a tasks folder of one's own, with ``old`` in its dataset.py
    replaced by ``new``."""
    tasks = tmp_path / "tasks"
    shutil.copytree(TASKS_DIR / "example", tasks / "mine", ignore=shutil.ignore_patterns("__pycache__"))
    dataset = tasks / "mine" / "dataset.py"
    assert old in dataset.read_text()
    dataset.write_text(dataset.read_text().replace(old, new))
    return tasks


def test_an_error_in_ones_own_dataset_py_names_its_file_and_line(tmp_path, capsys):
    from faults import assert_one_line_error
    from utility.cli import run_cli

    tasks = _own_example_task(tmp_path, "    counts = [", '    ["sil"].index("pau")\n    counts = [')
    line = next(n for n, text in enumerate((tasks / "mine" / "dataset.py").read_text().splitlines(), 1) if "pau" in text)
    args = ["-u", "fbank", "-d", "mine", "--tasks-dir", str(tasks), "-p", str(tmp_path / "exp"), "-o", *tiny_overrides("example")]
    with pytest.raises(SystemExit):
        run_cli(run_downstream.main, args)
    assert_one_line_error(capsys.readouterr().err, "'pau' is not in list", f"(raised in {tasks / 'mine' / 'dataset.py'}:{line};")


def test_a_frame_task_without_grid_align_is_named_before_extraction(tmp_path):
    tasks = _own_example_task(
        tmp_path, 'targets.append(grid.align(labels, self.num_samples, f"tone-{seed}"))', "targets.append(labels)"
    )
    args = ["-u", "fbank", "-d", "mine", "--tasks-dir", str(tasks), "-p", str(tmp_path / "exp"), "-o", *tiny_overrides("example")]
    with pytest.raises(
        ValueError, match=r"task mine: the train target of tone-0 has 100 labels, but the upstream gives 98 frames .* grid.align"
    ):
        run_downstream.main(args)

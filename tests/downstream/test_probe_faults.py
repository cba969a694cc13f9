"""Probing faults: a replaced upstream file, bad audio in a corpus and in inference inputs, a
damaged newest checkpoint, Ctrl-C during training. Tiny settings on the demo corpus."""

from __future__ import annotations

import json
import re
import signal

import numpy as np
import pytest
import torch

import run_downstream
from downstream import experiment
from conftest import REPO, tiny_config
from downstream.probe_checkpoint import read_probe_checkpoint
from faults import copy_corpus, interrupt_training, non_finite_wav, run_command, write_wav
from upstream import Upstream, save_upstream

SPEAKERS = [
    "-d",
    "speaker_utterance",
    "-o",
    "runner.total_steps=4",
    "runner.eval_step=2",
    "runner.log_step=2",
    "runner.batch_size=3",
    "runner.eval_batch_size=12",
]
DEMO_FILES = sorted((REPO / "data" / "demo" / "train-clean-100").rglob("*.flac"))


def probe(expdir, *extra: str, upstream=("-u", "fbank")) -> dict:
    return run_downstream.main([*upstream, "-p", str(expdir), *SPEAKERS, *extra])


def test_a_replaced_upstream_file_is_refused_unless_allowed(tmp_path):
    upstream = tmp_path / "upstream.ckpt"
    torch.manual_seed(0)
    save_upstream(Upstream(tiny_config(num_layers=3)), upstream, "aalbert_3L")
    probe(tmp_path / "exp", upstream=("-k", str(upstream)))
    recorded = read_probe_checkpoint(tmp_path / "exp" / "best.ckpt")["upstream_file"]
    assert recorded["size"] == upstream.stat().st_size and len(recorded["sha256"]) == 64
    torch.manual_seed(1)  # another model of the same shape under the same name
    save_upstream(Upstream(tiny_config(num_layers=3)), upstream, "aalbert_3L")
    changed = (
        rf"upstream checkpoint {upstream} has changed since probe .*best.ckpt was trained \(sha256 {recorded['sha256'][:12]}"
    )
    with pytest.raises(ValueError, match=changed):
        run_downstream.main(["-m", "evaluate", "-e", str(tmp_path / "exp")])
    with pytest.raises(ValueError, match=changed):
        run_downstream.main(["-m", "inference", "-e", str(tmp_path / "exp"), "-i", str(DEMO_FILES[0])])
    with pytest.raises(ValueError, match="--allow-upstream-change"):
        run_downstream.main(["-e", str(tmp_path / "exp"), "-o", "runner.total_steps=6"])  # resuming
    with pytest.warns(UserWarning, match="using the changed upstream checkpoint"):
        run_downstream.main(["-m", "evaluate", "-e", str(tmp_path / "exp"), "--allow-upstream-change"])
    evaluation = json.loads((tmp_path / "exp" / "evaluation.json").read_text())
    assert evaluation["upstream_file"]["replaced"] == recorded and evaluation["upstream_file"]["sha256"] != recorded["sha256"]
    out = tmp_path / "predictions.txt"
    with pytest.warns(UserWarning, match="using the changed upstream checkpoint"):
        run_downstream.main(
            [
                "-m",
                "inference",
                "-e",
                str(tmp_path / "exp"),
                "-i",
                str(DEMO_FILES[0]),
                "--output",
                str(out),
                "--allow-upstream-change",
            ]
        )
    assert "has changed since the probe was trained (--allow-upstream-change)" in out.read_text().splitlines()[1]
    upstream.unlink()
    with pytest.raises(FileNotFoundError, match=f"upstream checkpoint {upstream} that probe .* was trained on is missing"):
        run_downstream.main(["-m", "evaluate", "-e", str(tmp_path / "exp")])


@pytest.fixture
def corpus_with_bad_files(tmp_path):
    corpus = copy_corpus(tmp_path)
    chapter = corpus / "train-clean-100" / "1000" / "100001"
    write_wav(chapter / "1000-100001-0090.wav", np.full(10, 0.1, np.float32), "PCM_16")  # 10 samples
    non_finite_wav(chapter / "1000-100001-0091.wav")  # one NaN sample
    return corpus


def test_a_tiny_and_a_nan_file_in_a_corpus_are_named_before_the_first_update(corpus_with_bad_files, tmp_path):
    root = f"data.root={corpus_with_bad_files}"
    with pytest.raises(ValueError, match=r"2 unusable audio file\(s\) in .*runner.on_unreadable=skip") as error:
        probe(tmp_path / "stop", root)
    assert "1000-100001-0090.wav: 10 samples at 16 kHz, shorter than one frame (400)" in str(error.value)
    assert "1000-100001-0091.wav: 1 NaN or inf samples" in str(error.value)
    assert not (tmp_path / "stop").exists()  # stopped before the first update: nothing written

    with pytest.warns(UserWarning, match=r"runner.on_unreadable=skip: left out 2 unusable audio file\(s\).*0090.wav.*0091.wav"):
        results = probe(tmp_path / "skip", root, "runner.on_unreadable=skip")
    assert results["steps"] == 4 and np.isfinite(results["test"]["loss"]) and results["skipped_steps"] == 0


def test_inference_names_each_bad_file_and_still_predicts_the_good_ones(tmp_path):
    probe(tmp_path / "exp")
    bad = {
        write_wav(
            tmp_path / "tiny.wav", np.full(10, 0.1, np.float32), "PCM_16"
        ): "has 10 samples, shorter than one analysis window",
        non_finite_wav(tmp_path / "nan.wav"): "contains NaN or inf samples",
        write_wav(tmp_path / "stereo.wav", np.zeros((16000, 2), np.float32), "PCM_16"): "has 2 channels; models expect mono",
        tmp_path / "missing.flac": "audio file not found",
    }
    inputs = [DEMO_FILES[0], *bad, DEMO_FILES[1]]
    out = tmp_path / "predictions.txt"
    with pytest.raises(ValueError, match=r"4 of 6 input file\(s\) could not be used") as error:
        run_downstream.main(["-m", "inference", "-e", str(tmp_path / "exp"), "-i", *map(str, inputs), "--output", str(out)])
    for path, problem in bad.items():
        assert f"{path}" in str(error.value) and problem in str(error.value)
    assert f"predictions for the other 2 are in {out}" in str(error.value)
    lines = out.read_text().splitlines()
    assert lines[0].startswith("# speaker_utterance (fbank)")
    assert [line.split("\t")[0] for line in lines[1:]] == [str(DEMO_FILES[0]), str(DEMO_FILES[1])]


def test_a_damaged_newest_probe_checkpoint_is_named_and_the_intact_one_offered(tmp_path):
    probe(tmp_path / "exp", "runner.save_step=1", "runner.max_keep=4")
    newest = tmp_path / "exp" / "states-00000004.ckpt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated (best.ckpt may be the same file)
    with pytest.raises(
        ValueError,
        match=r"states-00000004.ckpt is corrupt or truncated.*newest intact checkpoint is .*states-00000003.ckpt: "
        r"add --skip-damaged",
    ):
        run_downstream.main(["-e", str(tmp_path / "exp"), "-o", "runner.total_steps=6"])
    with pytest.warns(UserWarning, match="states-00000004.ckpt is corrupt or truncated"):
        results = run_downstream.main(["-e", str(tmp_path / "exp"), "-o", "runner.total_steps=6", "--skip-damaged"])
    assert results["steps"] == 6 and (tmp_path / "exp" / "states-00000004.ckpt.damaged").is_file()
    assert read_probe_checkpoint(tmp_path / "exp" / "states-00000004.ckpt")["step"] == 4  # written again


def test_ctrl_c_saves_at_the_step_boundary_and_the_probe_continues_exactly(tmp_path):
    script = str(REPO / "run_downstream.py")
    settings = ["-u", "fbank", "-d", "speaker_frame", "-o", "runner.batch_size=2", "runner.eval_step=1000", "runner.save_step=2"]
    folder = tmp_path / "interrupted"
    step, last = interrupt_training([script, "-p", str(folder), *settings, "runner.total_steps=5000"], folder, tmp_path)
    assert last == (
        f"interrupted at step {step}: saved {folder / f'states-{step:08d}.ckpt'}; "
        f"continue with: python run_downstream.py -e {folder}"
    )
    end = f"runner.total_steps={step + 2}"
    resumed = run_command([script, "-e", str(folder), "-o", end], cwd=tmp_path)
    straight = run_command([script, "-p", str(tmp_path / "straight"), *settings, end], cwd=tmp_path)
    assert resumed.returncode == 0 and straight.returncode == 0, resumed.stderr[-2000:] + straight.stderr[-2000:]
    a = read_probe_checkpoint(folder / f"states-{step + 2:08d}.ckpt")
    b = read_probe_checkpoint(tmp_path / "straight" / f"states-{step + 2:08d}.ckpt")
    for part in b["weights"]:
        for key, value in b["weights"][part].items():
            assert torch.equal(a["weights"][part][key], value), f"{part}.{key}"


def test_resume_refuses_a_changed_seed_split_or_batch_plan(tmp_path):
    probe(tmp_path / "exp")
    with pytest.raises(ValueError, match="-e resumes a run with its own saved settings; --seed cannot change them"):
        run_downstream.main(["-e", str(tmp_path / "exp"), "--seed", "7", "-o", "runner.total_steps=6"])
    for change, key in (
        ("runner.train_proportion=0.5", "runner.train_proportion: 1.0 -> 0.5"),
        ("runner.batch_size=2", "runner.batch_size: 3 -> 2"),
        ("data.test_fraction=0.2", "data.test_fraction: 0.1 -> 0.2"),
        ("optimizer.lr=0.5", "optimizer.lr: 0.001 -> 0.5"),  # restored from the checkpoint: it would do nothing
        ("optimizer.schedule=linear", "optimizer.schedule: 'constant' -> 'linear'"),
    ):
        with pytest.raises(ValueError, match=rf"cannot resume .*with other settings for {re.escape(key)}"):
            run_downstream.main(["-e", str(tmp_path / "exp"), "-o", "runner.total_steps=6", change])
    assert run_downstream.main(["-e", str(tmp_path / "exp"), "-o", "runner.total_steps=6"])["steps"] == 6


def test_sigterm_is_ctrl_c_a_checkpoint_no_lock_exit_143_and_the_probe_continues(tmp_path):
    script = str(REPO / "run_downstream.py")
    folder = tmp_path / "terminated"
    args = [
        script,
        "-p",
        str(folder),
        "-u",
        "fbank",
        "-d",
        "speaker_frame",
        "-o",
        "runner.batch_size=2",
        "runner.eval_step=1000",
        "runner.save_step=2",
        "runner.total_steps=5000",
    ]
    step, last = interrupt_training(args, folder, tmp_path, signal.SIGTERM)  # checks exit status 143
    assert last.startswith(f"interrupted at step {step}: saved") and (folder / f"states-{step:08d}.ckpt").is_file()
    assert not (folder / ".lock").exists()
    resumed = run_command([script, "-e", str(folder), "-o", f"runner.total_steps={step + 1}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert read_probe_checkpoint(folder / f"states-{step + 1:08d}.ckpt")["step"] == step + 1


def corpus_of_speakers(root, keep, rename=lambda speaker: speaker):
    """Links to the demo train-clean-100 files of the speakers ``keep`` accepts, each speaker
    renamed (folders and file names)."""
    corpus = root / f"corpus{len(list(root.glob('corpus*')))}"
    for path in DEMO_FILES:
        speaker, chapter, _ = path.name.split("-")
        if keep(speaker):
            target = corpus / "train-clean-100" / rename(speaker) / chapter / path.name.replace(speaker, rename(speaker), 1)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return corpus


def test_evaluate_refuses_data_whose_classes_differ_and_keeps_evaluation_json(tmp_path):
    three = {"1000", "1001", "1002"}
    probe(tmp_path / "exp", f"data.root={corpus_of_speakers(tmp_path, keep=three.__contains__)}")
    run_downstream.main(["-m", "evaluate", "-e", str(tmp_path / "exp")])
    evaluation = (tmp_path / "exp" / "evaluation.json").read_bytes()
    renamed = corpus_of_speakers(tmp_path, keep=three.__contains__, rename=lambda speaker: "9" + speaker)
    with pytest.raises(
        ValueError,
        match=rf"the probe was trained on 3 classes and the data \(data.root={renamed}\) has 3 "
        r"that differ \(only in the probe: \['1000', '1001', '1002'\]; only in the data: \['91000', ",
    ):
        run_downstream.main(["-m", "evaluate", "-e", str(tmp_path / "exp"), "-o", f"data.root={renamed}"])
    assert (tmp_path / "exp" / "evaluation.json").read_bytes() == evaluation


def test_a_classification_task_needs_two_classes(tmp_path):
    speaker = DEMO_FILES[0].name.split("-")[0]
    alone = corpus_of_speakers(tmp_path, keep=lambda name: name == speaker)
    with pytest.raises(
        ValueError,
        match=rf"speaker_utterance: the data \(data.root={alone}\) has 1 class\(es\) \['{speaker}'\]; "
        "a classification task needs at least 2",
    ):
        probe(tmp_path / "exp", f"data.root={alone}")
    assert not (tmp_path / "exp").exists()


def test_inference_refuses_file_names_that_would_break_its_lines(tmp_path):
    probe(tmp_path / "exp")
    odd = [tmp_path / "two\nlines.flac", tmp_path / "a\ttab.flac"]
    for path in odd:
        path.symlink_to(DEMO_FILES[0])
    out = tmp_path / "predictions.txt"
    with pytest.raises(ValueError, match=r"2 of 4 input file\(s\) could not be used") as error:
        run_downstream.main(
            [
                "-m",
                "inference",
                "-e",
                str(tmp_path / "exp"),
                "-i",
                str(DEMO_FILES[0]),
                *map(str, odd),
                str(DEMO_FILES[1]),
                "--output",
                str(out),
            ]
        )
    for path in odd:
        assert f"{str(path)!r}: its name holds a newline or tab" in str(error.value)
    lines = out.read_text().splitlines()
    assert [line.split("\t")[0] for line in lines if not line.startswith("#")] == [str(DEMO_FILES[0]), str(DEMO_FILES[1])]


def folder_bytes(folder) -> dict:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def test_resuming_an_older_probe_checkpoint_names_the_newer_ones_and_writes_nothing(tmp_path):
    probe(tmp_path / "exp", "-o", "runner.save_step=2", "runner.max_keep=2")
    before = folder_bytes(tmp_path / "exp")
    assert {"states-00000002.ckpt", "states-00000004.ckpt", "results.json"} <= set(before)
    with pytest.raises(ValueError, match=r"continues from step 2, but .* holds newer checkpoints \(states-00000004.ckpt\)"):
        run_downstream.main(["-e", str(tmp_path / "exp" / "states-00000002.ckpt"), "-o", "runner.total_steps=6"])
    assert folder_bytes(tmp_path / "exp") == before


@pytest.mark.parametrize("name", ["results.json", "states-00000004.ckpt", "evaluation.json", "states-00000009.ckpt"])
def test_inference_refuses_to_write_over_a_file_the_run_owns(tmp_path, name):
    probe(tmp_path / "exp")
    before = folder_bytes(tmp_path / "exp")
    output = tmp_path / "exp" / name
    with pytest.raises(ValueError, match=rf"--output {re.escape(str(output))} is a file of the experiment folder"):
        run_downstream.main(["-m", "inference", "-e", str(tmp_path / "exp"), "-i", str(DEMO_FILES[0]), "--output", str(output)])
    assert folder_bytes(tmp_path / "exp") == before


def test_a_relative_data_root_is_stored_absolute_and_read_the_same_from_another_folder(tmp_path, monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    three = {"1000", "1001", "1002"}
    corpus = corpus_of_speakers(work, keep=three.__contains__)
    monkeypatch.chdir(work)
    trained = probe(tmp_path / "exp", f"data.root={corpus.name}")
    assert read_probe_checkpoint(tmp_path / "exp" / "best.ckpt")["run"]["config"]["data"]["root"] == str(corpus)
    monkeypatch.chdir(elsewhere)  # no corpus0/ here: the probe is scored on its own data
    scores = run_downstream.main(["-m", "evaluate", "-e", str(tmp_path / "exp"), "-t", "test"])
    assert scores["test"] == pytest.approx(trained["test"])


def test_evaluate_refuses_run_options_follows_a_moved_upstream_and_keeps_earlier_splits(tmp_path):
    upstream = tmp_path / "upstream.ckpt"
    torch.manual_seed(0)
    save_upstream(Upstream(tiny_config(num_layers=3)), upstream, "aalbert_3L")
    probe(tmp_path / "exp", upstream=("-k", str(upstream)))
    exp = str(tmp_path / "exp")
    for given in (["-d", "phone_linear"], ["-u", "fbank"], ["--seed", "3"]):
        with pytest.raises(ValueError, match=rf"-m evaluate scores a probe with its own saved settings; {given[0]} cannot"):
            run_downstream.main(["-m", "evaluate", "-e", exp, *given])
    with pytest.raises(ValueError, match=r"-m inference applies a probe with its saved settings; -o nonsense would not"):
        run_downstream.main(["-m", "inference", "-e", exp, "-i", str(DEMO_FILES[0]), "-o", "nonsense"])
    moved = upstream.rename(tmp_path / "moved.ckpt")
    dev = run_downstream.main(["-m", "evaluate", "-e", exp, "-k", str(moved), "-t", "dev"])
    test = run_downstream.main(["-m", "evaluate", "-e", exp, "-k", str(moved), "-t", "test"])
    evaluation = json.loads((tmp_path / "exp" / "evaluation.json").read_text())
    assert evaluation["dev"] == dev["dev"] and evaluation["test"] == test["test"]  # -t test kept dev
    assert evaluation["upstream_file"]["path"] == str(moved) and "root" in evaluation["data"]
    torch.manual_seed(1)  # another file at the new place: refused as a changed upstream
    save_upstream(Upstream(tiny_config(num_layers=3)), moved, "aalbert_3L")
    with pytest.raises(ValueError, match=rf"upstream checkpoint {moved} has changed since probe"):
        run_downstream.main(["-m", "evaluate", "-e", exp, "-k", str(moved)])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: experiment.new_spec("speaker_utterance", "fbank", seed="3"), r"new_spec: seed='3' must be int"),
        (lambda: experiment.new_spec("speaker_utterance", "fbank", fine_tune="no"), r"fine_tune='no' must be bool"),
        (lambda: experiment.new_spec("speaker_utterance", "fbank", overrides="k=v"), r"overrides='k=v' must be a list"),
        (lambda: experiment.evaluate("nowhere", splits="test"), r"evaluate: splits='test' must be a list of strings"),
        (lambda: experiment.evaluate("nowhere", splits=["tset"]), r"each of splits must be one of"),
    ],
)
def test_the_python_api_refuses_arguments_of_the_wrong_type(call, message):
    with pytest.raises((TypeError, ValueError), match=message):
        call()

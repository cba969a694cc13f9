"""The pretraining study command end to end on the demo data with a tiny model: pretraining,
learning curves against the trivial predictors, random networks of the same architecture,
probes over seeds, the report; and a rerun that reads everything back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from analysis import study
from conftest import TINY
from upstream.files import read_upstream_checkpoint
from corpora.root import DEMO_ROOT

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    argv = [
        "-p",
        str(out / "run"),
        "--pretrain-corpus",
        str(DEMO_ROOT),
        "--eval-corpus",
        str(DEMO_ROOT),
        "--upstreams",
        "aalbert_3L",
        "--steps",
        "4",
        "-d",
        "speaker_utterance",
        "--probe-seeds",
        "1",
        "2",
        "--random-seeds",
        "11",
        "12",
        "--pretrain-override",
        *TINY,
        "runner.save_step=2",
        "-o",
        "runner.total_steps=2",
        "runner.eval_step=2",
        "runner.log_step=1",
    ]
    return argv, study.main(argv)


def test_the_report_compares_pretrained_with_random_over_seeds(study_run):
    argv, path = study_run
    text = path.read_text()
    assert "python -m analysis.study " in text and "--random-seeds 11 12" in text
    rows = json.loads((path.parent / "probes.json").read_text())
    weighted = [r for r in rows if r["layer"] == "weighted_sum" and r["kind"] != "baseline"]
    assert sorted((r["kind"], r["upstream_seed"], r["probe_seed"]) for r in weighted) == sorted(
        [("pretrained", 1337, 1), ("pretrained", 1337, 2)] + [("random", s, p) for s in (11, 12) for p in (1, 2)]
    )  # the pretrained network's seed: the recipe's runner.seed
    # One pretrained network: the unit is the probe (the report says so).
    assert "(n=2 probes)" in text and "(n=4 probes)" in text
    layers = {(r["kind"], r["upstream_seed"], r["layer"]) for r in rows if r["layer"] != "weighted_sum"}
    assert layers == {(kind, seed, f"layer_{i}") for kind, seed in (("pretrained", 1337), ("random", 11)) for i in range(4)}
    for picture in ("learning_curves.png", "layerwise.png"):
        assert f"]({picture})" in text and (path.parent / picture).is_file()


def test_surface_baselines_are_probed_like_the_networks_and_the_best_one_is_compared(study_run):
    _, path = study_run
    text = path.read_text()
    rows = json.loads((path.parent / "probes.json").read_text())
    baselines = sorted((r["upstream"], r["probe_seed"]) for r in rows if r["kind"] == "baseline")
    # mel and the network's own input (the same features, stacked) are left out of a pooled task:
    # every utterance's mean is zero after per-utterance CMVN.
    assert baselines == sorted((name, seed) for name in ("fbank", "mel_raw") for seed in (1, 2))
    values: dict[str, list[float]] = {}
    for row in rows:
        if row["kind"] == "baseline":
            values.setdefault(row["upstream"], []).append(row["test"])
    best = max(values, key=lambda name: sum(values[name]))
    assert "## Surface baselines" in text and "| aalbert_3L | speaker_utterance |" in text
    assert f" {best} " in text.split("## Surface baselines")[0]  # named in the comparison table
    for row in rows:  # every probe says whether it stopped on a plateau, and its standard error
        assert row["converged"] == (row["best_step"] < row["steps"])
        items = 1 / (row["test_se"] ** 2 / (row["test"] * (1 - row["test"]))) if 0 < row["test"] < 1 else None
        assert items is None or round(items) == 10  # the demo's speaker test split: 10 utterances
    assert "## Convergence" in text and "**Not converged**" in text  # 2-update probes end at their best


def test_learning_curve_and_crossings_come_from_the_checkpoints(study_run):
    _, path = study_run
    curve = json.loads((path.parent / "curves.json").read_text())["aalbert_3L"]
    assert [step for step, _ in curve["curve"]] == [2, 4]
    assert set(curve["baselines"]) == {"zeros", "utterance_mean", "copy", "interpolation"}
    for name, step in curve["first_beaten"].items():
        beaten = [s for s, value in curve["curve"] if value < curve["baselines"][name]]
        assert step == (beaten[0] if beaten else None)


def test_random_networks_share_the_pretrained_architecture_not_its_weights(study_run):
    _, path = study_run
    pretrained, trained_state, _ = read_upstream_checkpoint(path.parent / "pretrain" / "aalbert_3L" / "best.ckpt")
    states = []
    for seed in (11, 12):
        config, state, _ = read_upstream_checkpoint(path.parent / "random" / f"aalbert_3L_seed{seed}.ckpt")
        assert config.to_dict() == pretrained.to_dict()
        states.append(state)
    name = next(k for k, v in trained_state.items() if v.dim() == 2)
    assert not torch.equal(states[0][name], states[1][name]) and not torch.equal(states[0][name], trained_state[name])


def test_a_rerun_reads_everything_back(study_run):
    argv, path = study_run
    out = path.parent
    files = [*out.glob("pretrain/**/*.ckpt"), *out.glob("random/*.ckpt"), *out.glob("probes/**/results.json")]
    before = {p: p.stat().st_mtime_ns for p in files}
    assert study.main(argv) == path
    assert all(p.stat().st_mtime_ns == before[p] for p in files)


def test_report_only_lists_unfinished_probes_and_trains_nothing(study_run):
    argv, path = study_run
    out = path.parent
    cell = out / "probes" / "seed2" / "speaker_utterance" / "aalbert_3L_random12" / "weighted_sum"
    (cell / "results.json").rename(cell / "results.json.kept")
    try:
        study.main(argv + ["--report-only"])
        text = path.read_text()
        assert "**Partial report**" in text and "probes/seed2/speaker_utterance/aalbert_3L_random12/weighted_sum" in text
        assert "(n=3 probes)" in text, "the random group without the unfinished probe"
        assert not (cell / "results.json").exists(), "nothing trained"
    finally:
        (cell / "results.json.kept").rename(cell / "results.json")


def test_more_pretraining_seeds_join_a_finished_study_and_networks_become_the_unit(study_run, tmp_path):
    argv, _ = study_run
    out = tmp_path / "run"
    argv = [str(out) if value.endswith("/run") else value for value in argv]
    argv[argv.index("--probe-seeds") + 1 : argv.index("--probe-seeds") + 3] = ["1"]  # one probe seed: quicker
    study.main(argv)  # a one-run study, finished
    with pytest.raises(ValueError, match=r"runner.seed=1337, not 5: list that seed first"):
        study.main(argv + ["--pretrain-seeds", "5", "6"])
    report = study.main(argv + ["--pretrain-seeds", "1337", "6"])  # the finished run stays the first
    text = report.read_text()
    rows = json.loads((out / "probes.json").read_text())
    pretrained = [r for r in rows if r["layer"] == "weighted_sum" and r["kind"] == "pretrained"]
    assert sorted((r["upstream_seed"], r["probe_seed"]) for r in pretrained) == [(6, 1), (1337, 1)]
    assert (out / "pretrain" / "aalbert_3L_seed6" / "best.ckpt").is_file()
    assert "(n=2 networks)" in text and "probe-seed noise only" in text
    assert set(json.loads((out / "curves.json").read_text())) == {"aalbert_3L", "aalbert_3L_seed6"}
    layers = {(r["kind"], r["upstream_seed"]) for r in rows if r["layer"] != "weighted_sum"}
    assert layers == {("pretrained", 1337), ("random", 11)}, "layer by layer: the first pretrained run only"
    # An unfinished extra run is named and left out of a partial report.
    (out / "pretrain" / "aalbert_3L_seed6" / "states-00000004.ckpt").unlink()
    text = study.main(argv + ["--pretrain-seeds", "1337", "6", "--report-only"]).read_text()
    assert "`pretrain/aalbert_3L_seed6` (pretraining: update 2 of 4)" in text and "(n=1 probes)" in text


STUDY_ARGS = ["-p", "unused", "--pretrain-corpus", str(DEMO_ROOT), "--eval-corpus", str(DEMO_ROOT), "--steps", "4"]


@pytest.mark.parametrize(
    "repeated", [["--probe-seeds", "1", "1"], ["--pretrain-seeds", "5", "5"], ["--random-seeds", "11", "12", "11"]]
)
def test_a_repeated_seed_is_refused_in_one_line(repeated, capsys):
    with pytest.raises(SystemExit) as stop:
        study.parse_plan(STUDY_ARGS + repeated)
    assert stop.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and f"{repeated[0]} {' '.join(repeated[1:])}: {repeated[1]} given twice" in message


def test_one_value_has_no_spread():
    row = study.compare({1337: [0.5]}, {11: [0.25], 12: [0.5]})
    assert row["pretrained"] == "0.5000 (n=1 probes)" and "nan" not in row["pretrained"]
    assert row["random"].startswith("0.3750 +- 0.1768 (n=2 probes)")


def test_groups_without_spread_get_no_interval():
    """Two networks a side, each side scoring the same (a few test items): a zero-width
    interval would claim a certainty nothing measured."""
    flat = study.compare({1: [0.32], 2: [0.32]}, {11: [0.30], 12: [0.30]})
    assert flat["welch_95ci"] == "n/a" and abs(flat["difference"] - 0.02) < 1e-12
    spread = study.compare({1: [0.32], 2: [0.34]}, {11: [0.30], 12: [0.30]})
    assert spread["welch_95ci"].startswith("[")


def with_option(argv: list[str], option: str, *values: str) -> list[str]:
    """``argv`` with ``option``'s values replaced (or the option added)."""
    if option not in argv:
        return [*argv, option, *values]
    start = argv.index(option) + 1
    end = next((i for i in range(start, len(argv)) if argv[i].startswith("-") and not argv[i][1:].isdigit()), len(argv))
    return [*argv[:start], *values, *argv[end:]]


def files_of(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}


def test_a_rerun_with_other_pretraining_settings_is_refused_naming_the_setting(study_run, tmp_path):
    argv, path = study_run
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("optimizer:\n  lr: 0.0001\n")
    corpus = tmp_path / "corpus"  # another corpus folder (same audio: only the identity differs)
    corpus.mkdir()
    for subset in DEMO_ROOT.iterdir():
        (corpus / subset.name).symlink_to(subset)
    pretrain_overrides = argv[argv.index("--pretrain-override") + 1 : argv.index("-o")]
    before = files_of(path.parent)
    for changed, named in [
        (with_option(argv, "--steps", "20"), "runner.total_steps: 4 -> 20"),  # also an unfinished run
        (with_option(argv, "--recipe", str(recipe)), "optimizer.lr: "),
        (with_option(argv, "--pretrain-corpus", str(corpus)), f"corpus.root: '{DEMO_ROOT}' -> '{corpus}'"),
        (
            with_option(argv, "--pretrain-override", *pretrain_overrides, "model.encoder.hidden_size=48"),
            "model.encoder.hidden_size: 32 -> 48",
        ),
    ]:
        with pytest.raises(ValueError, match=r"holds a pretraining run made with other settings") as refusal:
            study.main(changed)
        assert named in str(refusal.value) and "give another -p" in str(refusal.value)
    assert files_of(path.parent) == before, "nothing trained or written"


def test_the_same_pretraining_corpus_spelled_relatively_reads_back(study_run):
    argv, path = study_run
    relative = os.path.relpath(DEMO_ROOT)
    before = files_of(path.parent / "pretrain")
    study.main(with_option(argv, "--pretrain-corpus", relative))
    assert files_of(path.parent / "pretrain") == before


@pytest.fixture
def moved_study(study_run, tmp_path):
    """A copy of the finished study in another folder, and its command line."""
    argv, path = study_run
    moved = tmp_path / "moved"
    shutil.copytree(path.parent, moved, ignore=shutil.ignore_patterns(".lock"))
    return with_option(argv, "-p", str(moved)), moved


def test_a_moved_study_folder_reads_its_cells_back(moved_study):
    argv, moved = moved_study
    results = files_of(moved / "probes")
    study.main(argv)
    assert {p: t for p, t in files_of(moved / "probes").items() if p in results} == results, "nothing retrained"


def test_probes_trained_side_by_side_are_whole_and_read_back(moved_study):
    """--jobs 2: the new cells (half the labels) are trained by two worker processes; every
    model gets its row, and a later one-process command reads them back without retraining."""
    argv, moved = moved_study
    before = files_of(moved / "probes")
    study.main(argv + ["--proportions", "0.5", "--jobs", "2"])
    rows = json.loads((moved / "probes.json").read_text())
    full = {(r["upstream"], r["probe_seed"]) for r in rows if study.all_labels(r) and r["layer"] == "weighted_sum"}
    half = {(r["upstream"], r["probe_seed"]) for r in rows if r["train_proportion"] == 0.5}
    assert half == full and all(r["test"] is not None for r in rows)
    assert {p: t for p, t in files_of(moved / "probes").items() if p in before} == before, "finished cells kept"
    trained = files_of(moved / "probes")
    assert json.loads((moved / "wall_time.json").read_text())["seconds"]["probes: weighted sum, fewer labels"] > 0
    study.main(argv + ["--proportions", "0.5"])
    assert files_of(moved / "probes") == trained, "the workers' cells are read back as they are"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_probes_side_by_side_stop_with_a_checkpoint_each_and_leave_no_worker(tmp_path, signum):
    """Ctrl-C or SIGTERM to the study, as to a background job (SIGINT inherited as ignored):
    it passes the signal on once, every running probe saves a checkpoint, no queued probe
    starts, no worker outlives it, and it exits 128 + the signal."""
    from faults import ENV, wait_for

    out = tmp_path / "run"
    argv = ["-m", "analysis.study", "-p", str(out), "--pretrain-corpus", str(DEMO_ROOT), "--eval-corpus", str(DEMO_ROOT)]
    argv += ["--upstreams", "aalbert_3L", "--steps", "2", "-d", "phone_linear", "--probe-seeds", "1", "--random-seeds", "11"]
    argv += ["--pretrain-override", *TINY, "-o", "runner.total_steps=100000", "runner.eval_step=50", "--jobs", "2"]
    process = subprocess.Popen(
        [sys.executable, *argv],
        cwd=REPO_ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as a shell starts a background job
    )
    try:
        wait_for(out / "probes", "seed1/*/*/*/states-*.ckpt", process)
        deadline = time.monotonic() + 120
        while len({c.parent for c in out.glob("probes/seed1/*/*/*/states-*.ckpt")}) < 2:  # both workers train
            assert process.poll() is None and time.monotonic() < deadline, "the second probe did not start"
            time.sleep(0.1)
        listed = subprocess.run(["pgrep", "-P", str(process.pid), "-f", "spawn_main"], capture_output=True, text=True)
        workers = listed.stdout.split()
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    started = [cell.parent for cell in out.glob("probes/seed1/*/*/*/cell.json")]
    assert len(started) == 2, "the two running probes, and no queued one"
    assert all(list(cell.glob("states-*.ckpt")) for cell in started)
    assert len(workers) == 2 and not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "no worker left"


def test_a_cell_without_best_ckpt_is_checked_against_the_corpus(moved_study, tmp_path):
    argv, moved = moved_study
    for best in moved.glob("probes/**/best.ckpt"):
        best.unlink()  # deleted to save disk: the cell's own record still says what made it
    corpus = tmp_path / "eval"
    corpus.mkdir()
    for subset in DEMO_ROOT.iterdir():
        (corpus / subset.name).symlink_to(subset)
    with pytest.raises(ValueError, match=rf"made with other settings .*config.data.root: '{DEMO_ROOT}' -> '{corpus}'"):
        study.main(with_option(argv, "--eval-corpus", str(corpus)))


def test_a_cell_of_another_network_at_the_same_path_is_refused(moved_study):
    argv, moved = moved_study
    shutil.copyfile(moved / "random" / "aalbert_3L_seed11.ckpt", moved / "pretrain" / "aalbert_3L" / "best.ckpt")
    with pytest.raises(ValueError, match=r"made with other settings .*upstream_sha256: "):
        study.main(argv)


def test_probes_of_a_deleted_pretraining_run_are_refused_before_it_trains_again(moved_study):
    argv, moved = moved_study
    shutil.rmtree(moved / "pretrain")
    with pytest.raises(ValueError, match=r"aalbert_3L_pretrained holds probes of an earlier pretraining run"):
        study.main(argv)
    assert not (moved / "pretrain").exists(), "nothing trained"


def test_random_networks_are_rebuilt_for_a_new_architecture(moved_study):
    argv, moved = moved_study
    shutil.rmtree(moved / "pretrain")
    shutil.rmtree(moved / "probes")
    pretrain_overrides = argv[argv.index("--pretrain-override") + 1 : argv.index("-o")]
    wider = with_option(argv, "--pretrain-override", *pretrain_overrides, "model.encoder.hidden_size=48")
    wider = with_option(wider, "--probe-seeds", "1")
    study.main(wider)
    for seed in (11, 12):
        config, _, _ = read_upstream_checkpoint(moved / "random" / f"aalbert_3L_seed{seed}.ckpt")
        assert config.encoder.hidden_size == 48


def test_cells_finished_before_they_recorded_their_key_are_checked_from_best_ckpt(moved_study):
    argv, moved = moved_study
    keys = sorted(moved.glob("probes/**/cell.json"))
    assert keys, "every cell records what made it"
    recorded = {key: json.loads(key.read_text()) for key in keys}
    for key in keys:
        key.unlink()  # as an older study left them
    study.main(argv)
    assert {key: json.loads(key.read_text()) for key in keys} == recorded, "recorded again from best.ckpt"
    keys[0].unlink()
    (keys[0].parent / "best.ckpt").unlink()
    with pytest.raises(ValueError, match=r"holds results but neither cell.json .* nor best.ckpt: .*delete"):
        study.main(argv)


@pytest.mark.parametrize(
    "change, named",
    [
        (["-d", "phone_linaer"], "unknown task 'phone_linaer'"),
        (["-o", "runner.total_stepz=3"], "probe settings of task speaker_utterance (-d, -o): override 'runner.total_stepz=3'"),
        (["-d", "phone_linear", "--eval-corpus", "NO_ALIGNMENTS"], "--eval-corpus"),
        (["--pretrain-override", "model.encoder.hidden=3"], "pretraining aalbert_3L (--recipe, --pretrain-override)"),
    ],
)
def test_bad_inputs_are_refused_before_anything_is_written(change, named, tmp_path):
    corpus = tmp_path / "corpus"  # audio without alignments
    corpus.mkdir()
    for subset in DEMO_ROOT.iterdir():
        if subset.name != "alignments":
            (corpus / subset.name).symlink_to(subset)
    out = tmp_path / "out"
    argv = [*STUDY_ARGS[:1], str(out), *STUDY_ARGS[2:], "--upstreams", "aalbert_3L", "-d", "speaker_utterance"]
    argv += [value.replace("NO_ALIGNMENTS", str(corpus)) for value in change]
    with pytest.raises((ValueError, KeyError, FileNotFoundError)) as refusal:
        study.main(argv)
    assert named in str(refusal.value)
    assert not out.exists(), "nothing written, nothing trained"


def test_probe_settings_add_to_the_study_defaults():
    plan = study.parse_plan(STUDY_ARGS + ["-o", "runner.total_steps=2", "expert.dropout=0.1"])
    assert plan.probe_overrides == (
        "runner.total_steps=2",
        "runner.eval_step=100",
        "runner.log_step=100",
        "runner.early_stopping_patience=5",
        "expert.dropout=0.1",
    )


def test_a_run_with_corpus_cmvn_matches_the_settings_that_asked_for_it(tmp_path):
    """data.corpus_cmvn fills in the front end's statistics when the run starts: the stored run and
    the command's settings differ there, and only there."""
    from pretrain.settings import load_settings

    planned = load_settings("aalbert_3L", None, ["data.corpus_cmvn=true", f"corpus.root={DEMO_ROOT}"]).to_dict()
    stored = json.loads(json.dumps(planned))
    stats = {"input_mean": [0.0] * 160, "input_std": [1.0] * 160, "target_mean": [0.0] * 201, "target_std": [1.0] * 201}
    stored["model"]["frontend"].update(cmvn=False, corpus_stats=stats)
    assert study.pretraining_key(stored, False) == study.pretraining_key(planned, False)
    stored["model"]["frontend"]["n_mels"] = 40  # anything else still counts
    assert study.pretraining_key(stored, False) != study.pretraining_key(planned, False)
    plain = json.loads(json.dumps(planned))
    plain["data"]["corpus_cmvn"] = False
    plain["model"]["frontend"].update(cmvn=False, corpus_stats=stats)
    assert study.pretraining_key(plain, False) != study.pretraining_key({**plain, "model": planned["model"]}, False)


def test_the_seeds_grid_adds_fewer_labels_fine_tuning_pictures_and_wall_time(moved_study):
    argv, moved = moved_study
    report = study.main(argv + ["--proportions", "0.5", "--fine-tune", "speaker_utterance", "--tsne"]).read_text()
    rows = json.loads((moved / "probes.json").read_text())
    full = {r["upstream"]: r for r in rows if r["layer"] == "weighted_sum" and study.all_labels(r) and r["probe_seed"] == 1}
    half = {r["upstream"]: r for r in rows if r["train_proportion"] == 0.5 and not r["fine_tune"] and r["probe_seed"] == 1}
    assert set(half) == set(full), "every model's weighted sum again with half the labels"
    assert all(half[name]["train_utterances"] < full[name]["train_utterances"] for name in half)
    # Cheapest and most needed first: weighted sums, layers, fewer labels, fine-tuning.
    stages = [3 if r["fine_tune"] else 1 if r["layer"] != "weighted_sum" else 0 if study.all_labels(r) else 2 for r in rows]
    assert stages == sorted(stages) and set(stages) == {0, 1, 2, 3}
    tuned = sorted((r["kind"], r["train_proportion"], r["probe_seed"]) for r in rows if r["fine_tune"])
    networks = [("pretrained", 1), ("random", 2)]  # one pretrained network, two random ones
    assert tuned == sorted(
        (kind, share, seed) for kind, count in networks for share in (0.5, 1.0) for seed in (1, 2) for _ in range(count)
    )
    for probe, labels in (("weighted sum", "50 %"), ("fine-tuned", "100 %"), ("fine-tuned", "50 %")):
        assert f"| aalbert_3L | speaker_utterance | {probe} | {labels} | accuracy |" in report
    pictures = {p.name for p in (moved / "tsne").glob("*.png")}
    assert {"aalbert_3L_pretrained_speakers.png", "aalbert_3L_random11_phones.png", "fbank_phones.png"} <= pictures
    assert "mel_speakers.png" not in pictures and "mel_phones.png" in pictures  # mel pools to zero
    assert "](tsne/aalbert_3L_pretrained_phones.png)" in report
    seconds = json.loads((moved / "wall_time.json").read_text())["seconds"]
    assert seconds["probes: fine-tuned"] > 0 and seconds["t-SNE pictures"] > 0 and seconds["pretraining"] >= 0
    assert "## Wall time" in report and "| probes: fine-tuned |" in report
    lines = report.splitlines()
    header = next(i for i, line in enumerate(lines) if "| layer weights (0 = input) |" in line)
    column = [c.strip() for c in lines[header].split("|")].index("layer weights (0 = input)")
    weights = lines[header + 2].split("|")[column].split()
    assert len(weights) == 4 and abs(sum(map(float, weights)) - 1) < 0.02  # softmax weights, 2 decimals


@pytest.mark.parametrize(
    "grid, named",
    [
        (["--proportions", "1"], "each proportion must be in (0, 1)"),
        (["--fine-tune", "phone_linear"], "not among the probed tasks"),
        (["--fine-tune-proportions", "0.1"], "nothing is fine-tuned"),
        (["--fine-tune", "speaker_utterance", "--fine-tune-proportions", "0.1"], "add it to --proportions"),
    ],
)
def test_a_grid_option_that_cannot_work_is_refused_in_one_line(grid, named, capsys):
    with pytest.raises(SystemExit):
        study.parse_plan(STUDY_ARGS + ["-d", "speaker_utterance", *grid])
    assert named in capsys.readouterr().err


def test_fine_tuning_takes_the_shares_it_is_given_and_waits_for_the_cheaper_probes():
    from analysis.cells import UpstreamChoice

    choice = UpstreamChoice("aalbert_3L", "x.ckpt", "aalbert_3L_pretrained")
    grid = ["-d", "speaker_utterance", "--proportions", "0.1", "0.01", "--fine-tune", "speaker_utterance"]
    every = study.parse_plan(STUDY_ARGS + grid)
    assert every.fine_tune_shares == (1.0, 0.1, 0.01)  # all the labels and every share by default
    chosen = study.parse_plan(STUDY_ARGS + grid + ["--fine-tune-proportions", "0.1"])
    cells = study.model_cells(chosen, "speaker_utterance", choice, "pretrained", 4, False)
    assert [c.proportion for c in cells if c.fine_tune] == [0.1]
    assert [c.proportion for c in cells if not c.fine_tune] == [1.0, 0.1, 0.01]


def test_a_pretraining_run_states_its_wall_time_across_a_resume(study_run):
    _, path = study_run
    curve = json.loads((path.parent / "curves.json").read_text())["aalbert_3L"]
    assert curve["train_seconds"] > 0
    assert "| minutes |" in path.read_text().split("## Probes")[0]

"""Analysis commands on the demo data with a tiny model: the files they promise, with the content claimed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from conftest import tiny_config
from upstream import Upstream, save_upstream
from analysis import attention_map, tsne
from corpora.root import DEMO_ROOT


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_aalbert_3L.ckpt"
    return save_upstream(Upstream(tiny_config(num_layers=3)), path, name="aalbert_3L")


def test_attention_map_png(tmp_path, tiny_checkpoint):
    audio = next(DEMO_ROOT.glob("dev-clean/*/*/*.flac"))
    out = attention_map.main(
        [
            "-u",
            "aalbert_3L",
            "-k",
            str(tiny_checkpoint),
            "--audio",
            str(audio),
            "--layer",
            "3",
            "--head",
            "1",
            "--output",
            str(tmp_path / "a.png"),
        ]
    )
    image = imread(out)
    assert image.shape[:2] == (900, 800)
    assert image[..., :3].std() > 0.05  # a picture, not a blank canvas
    with pytest.raises(SystemExit):
        attention_map.main(["-u", "aalbert_3L", "-k", str(tiny_checkpoint), "--audio", str(audio), "--layer", "4"])


def test_attention_map_rows_sum_to_one(tiny_checkpoint):
    from upstream import build_upstream, read_audio

    model = build_upstream("aalbert_3L", tiny_checkpoint)
    wav = read_audio(next(DEMO_ROOT.glob("dev-clean/*/*/*.flac")))
    weights = attention_map.attention_map(model, wav, layer=2, head=None)
    assert weights.shape[0] == weights.shape[1] == (wav.numel() // 160 + 1) // 3
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[0]), atol=1e-5)
    with pytest.raises(ValueError, match=r"head must be in \[0, 3\]"):
        attention_map.attention_map(model, wav, layer=2, head=4)


def test_speaker_tsne_png_is_deterministic(tmp_path, tiny_checkpoint):
    first = tsne.main(["-u", "aalbert_3L", "-k", str(tiny_checkpoint), "--layer", "2", "--output", str(tmp_path / "t1.png")])
    second = tsne.main(["-u", "aalbert_3L", "-k", str(tiny_checkpoint), "--layer", "2", "--output", str(tmp_path / "t2.png")])
    image = imread(first)
    assert image.shape[:2] == (700, 800)
    assert np.array_equal(image, imread(second)), "same seed, same picture"


# ---------------------------------------------------------------------------------------------
# Frame-level t-SNE


def test_broad_classes_cover_the_phone_list_once():
    from corpora.phone_splits import read_phone_names
    from analysis.phone_classes import BROAD_CLASSES, broad_class_names

    phones = read_phone_names(DEMO_ROOT / "phones.txt")
    listed = [phone for members in BROAD_CLASSES.values() for phone in members]
    assert sorted(listed) == sorted(phones), "every phone in exactly one broad class"
    assert broad_class_names(["sil", "aa", "ch"]) == ["silence", "vowels", "affricates"]
    with pytest.raises(ValueError, match=r"no broad class for phone\(s\) \['xx'\]"):
        broad_class_names(["sil", "xx"])


def test_frame_embeddings_are_aligned_and_seeded(tiny_checkpoint):
    from downstream.frames import FrameGrid
    from upstream import build_upstream, read_audio
    from corpora.index import find_utterances
    from corpora.label_frames import read_frame_labels

    model = build_upstream("aalbert_3L", tiny_checkpoint)
    utterances = find_utterances(DEMO_ROOT, ["dev-clean"], progress=False)[:4]
    labels = read_frame_labels(DEMO_ROOT / "alignments" / "dev-clean.frames.txt")
    vectors, classes = tsne.frame_embeddings(model, utterances, labels, layer=1, max_frames=10**6, seed=0)
    grid = FrameGrid(model)
    expected = torch.cat([grid.align(torch.tensor(labels[u.utt_id]), read_audio(u.path).numel(), u.utt_id) for u in utterances])
    assert vectors.shape == (expected.numel(), 32)
    assert np.array_equal(classes, expected.numpy()), "all frames kept, in order, with FrameGrid's labels"
    few = tsne.frame_embeddings(model, utterances, labels, layer=1, max_frames=50, seed=3)
    again = tsne.frame_embeddings(model, utterances, labels, layer=1, max_frames=50, seed=3)
    other = tsne.frame_embeddings(model, utterances, labels, layer=1, max_frames=50, seed=4)
    assert few[0].shape == (50, 32)
    assert np.array_equal(few[0], again[0]) and not np.array_equal(few[0], other[0])
    with pytest.raises(ValueError, match="no frame labels for 4 utterance"):
        tsne.frame_embeddings(model, utterances, {}, layer=1, max_frames=50, seed=0)


def test_phone_tsne_png(tmp_path, tiny_checkpoint):
    out = tsne.main(
        [
            "-u",
            "aalbert_3L",
            "-k",
            str(tiny_checkpoint),
            "--level",
            "frame",
            "-o",
            "data.subsets=[dev-clean]",
            "--max-frames",
            "120",
            "--output",
            str(tmp_path / "phones.png"),
        ]
    )
    image = imread(out)
    assert image.shape[:2] == (700, 800)
    assert image[..., :3].std() > 0.05


def test_upstream_choice_errors(tmp_path, tiny_checkpoint):
    from analysis.cells import UpstreamChoice, parse_upstreams

    assert UpstreamChoice.parse("fbank") == UpstreamChoice("fbank", None)
    with pytest.raises(FileNotFoundError, match="checkpoint .*missing.ckpt not found"):
        UpstreamChoice.parse(f"aalbert_3L:{tmp_path / 'missing.ckpt'}")
    with pytest.raises(ValueError, match=r"\['fbank'\] given twice; label each one, e.g. random=fbank"):
        parse_upstreams(["fbank", "fbank"])
    # The same architecture twice, under two labels (random vs trained weights).
    choices = parse_upstreams(["random=aalbert_3L", f"trained=aalbert_3L:{tiny_checkpoint}"])
    assert [(c.label, c.name) for c in choices] == [("random", "aalbert_3L"), ("trained", "aalbert_3L")]
    assert choices[1].ckpt == str(tiny_checkpoint)
    with pytest.raises(ValueError, match=r"expected \[LABEL=\]NAME\[:CHECKPOINT\]"):
        UpstreamChoice.parse("=aalbert_3L")
    # Random weights are drawn from the seed: the same seed, the same model.
    first, again, other = (choices[0].build(seed) for seed in (3, 3, 4))
    assert torch.equal(first.encoder.input_projection.weight, again.encoder.input_projection.weight)
    assert not torch.equal(first.encoder.input_projection.weight, other.encoder.input_projection.weight)


# ---------------------------------------------------------------------------------------------
# Layer-wise probing, proportion sweep, report (a few probe steps each)

FEW_STEPS = ["-o", "runner.total_steps=2", "runner.eval_step=2", "runner.log_step=1"]


def read_rows(path):
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_layerwise_command(tmp_path, tiny_checkpoint):
    from analysis import layerwise

    paths = layerwise.main(
        ["-u", "fbank", f"aalbert_3L:{tiny_checkpoint}", "-d", "phone_linear", "-p", str(tmp_path)] + FEW_STEPS
    )
    rows = read_rows(paths["csv"])
    assert [(r["upstream"], r["layer"]) for r in rows] == [("fbank", "weighted_sum"), ("fbank", "layer_0")] + [
        ("aalbert_3L", name) for name in ["weighted_sum", "layer_0", "layer_1", "layer_2", "layer_3"]
    ]
    assert all(r["task"] == "phone_linear" and r["metric"] == "accuracy" and 0 <= float(r["test"]) <= 1 for r in rows)
    # fbank has one hidden state: its weighted sum is that state, so both probes agree exactly.
    assert rows[0]["test"] == rows[1]["test"]
    for name in ("layerwise", "layer_weights"):
        image = imread(paths[name])
        assert image.shape[:2] == (400, 550)
        assert image[..., :3].std() > 0.05


@pytest.fixture(scope="module")
def report_run(tmp_path_factory, tiny_checkpoint):
    from analysis import report

    outdir = tmp_path_factory.mktemp("report")
    argv = [
        "-u",
        "fbank",
        f"aalbert_3L:{tiny_checkpoint}",
        "-d",
        "speaker_utterance",
        "--proportions",
        "0.05",
        "1",
        "--speed-utterances",
        "2",
        "-p",
        str(outdir),
    ] + FEW_STEPS
    return argv, report.main(argv)


def test_report_holds_every_upstream_and_table(report_run):
    argv, path = report_run
    text = path.read_text()
    assert "python -m analysis.report " + " ".join(argv) in text
    assert "| fbank | (none) | 0 | 1 |" in text
    assert "| aalbert_3L |" in text and str(argv[2].split(":", 1)[1]) in text
    for picture in ("layerwise.png", "layer_weights.png", "proportion.png"):
        assert f"]({picture})" in text and (path.parent / picture).is_file()
    rows = read_rows(path.parent / "results.csv")
    assert len(rows) == 2 + 5, "one row per hidden state and weighted sum, per upstream"
    # Every cell of an upstream read one shared store of all its hidden states: extracted once
    # (fbank, aalbert_3L and the added baseline mel_raw).
    stores = sorted(p.name.split("-")[1] for p in (path.parent / "feature_cache").iterdir())
    assert stores == ["all", "all", "all"]
    best = max((r for r in rows if r["upstream"] == "aalbert_3L" and r["layer"] != "weighted_sum"), key=lambda r: float(r["dev"]))
    assert f"| speaker_utterance | aalbert_3L | accuracy | {best['layer']} | {float(best['test']):.4f} |" in text


def test_report_adds_the_baselines_a_pooled_task_can_read(report_run):
    """-u fbank aalbert_3L:CKPT -d speaker_utterance: fbank is listed (not added again), mel_raw
    is added with the weighted sum and the sweep only, mel and the network's own input (both
    normalised per utterance) are not probed by the pooled task, and the network is compared
    with the best baseline."""
    import json

    _, path = report_run
    text = path.read_text()
    cells = path.parent / "cells" / "speaker_utterance"
    assert sorted(p.name for p in cells.iterdir()) == ["aalbert_3L", "fbank", "mel_raw"]
    assert sorted(p.name for p in (cells / "mel_raw").iterdir()) == ["weighted_sum", "weighted_sum_proportion0.05"]
    facts = json.loads((path.parent / "upstreams.json").read_text())
    assert [row["upstream"] for row in facts] == ["fbank", "aalbert_3L", "mel", "mel_raw", "model_input"]
    assert "Not probed: `mel` on speaker_utterance, `model_input` on speaker_utterance (the task pools" in text
    for upstream, kind in (("fbank", "baseline"), ("aalbert_3L", "network"), ("mel_raw", "baseline")):
        assert f"| speaker_utterance | {upstream} | {kind} | accuracy |" in text
    tests = {
        name: json.loads((cells / name / "weighted_sum" / "results.json").read_text())["test"]["accuracy"]
        for name in ("fbank", "mel_raw", "aalbert_3L")
    }
    best = max(("fbank", "mel_raw"), key=lambda name: tests[name])
    margin = tests["aalbert_3L"] - tests[best]
    assert "## Networks against the best surface baseline" in text
    row = f"| speaker_utterance | aalbert_3L | accuracy | {tests['aalbert_3L']:.4f} | {best} | {tests[best]:.4f} | {margin:.4f} |"
    assert row in text
    # The layer-wise tables hold the upstreams probed layer by layer, not the added baseline.
    assert "mel_raw" not in {r["upstream"] for r in read_rows(path.parent / "results.csv")}


def test_baselines_added_for_the_networks_given():
    from analysis.baselines import missing_baselines
    from analysis.cells import parse_upstreams

    def labels(texts):
        return [choice.label for choice in missing_baselines(parse_upstreams(texts))]

    # A random network without a file has no own input to read; plain features alone get nothing.
    assert labels(["random=aalbert_3L"]) == ["fbank", "mel", "mel_raw"]
    assert labels(["fbank", "mel_raw"]) == []


def test_report_probes_a_networks_own_input_and_no_baselines_turns_them_off(tmp_path, tiny_checkpoint):
    import json
    import re

    from analysis import report

    argv = ["-u", "mel", f"aalbert_3L:{tiny_checkpoint}", "-d", "phone_linear", "--stages", "weighted_sum"]
    argv += ["--speed-utterances", "1", "-p", str(tmp_path)] + FEW_STEPS
    text = report.main(argv).read_text()
    cells = tmp_path / "cells" / "phone_linear"
    assert sorted(p.name for p in cells.iterdir()) == ["aalbert_3L", "fbank", "mel", "mel_raw", "model_input"]
    assert "| phone_linear | model_input | baseline | accuracy |" in text and "Not probed" not in text
    assert text.count("| phone_linear | mel | baseline |") == 1, "mel was listed: not added again"
    before = sorted(tmp_path.glob("cells/**/results.json"))
    text = report.main(argv + ["--no-baselines"]).read_text()
    assert sorted(tmp_path.glob("cells/**/results.json")) == before
    assert [row["upstream"] for row in json.loads((tmp_path / "upstreams.json").read_text())] == ["mel", "aalbert_3L"]
    assert re.search(r"\| phone_linear \| aalbert_3L \| accuracy \| [0-9.]+ \| mel \|", text), "the listed mel is left"
    assert all(f"| {name} |" not in text for name in ("fbank", "mel_raw", "model_input"))


def test_report_layer_weights_come_from_the_probe(report_run):
    import json

    from analysis.cells import Cell, UpstreamChoice, learned_layer_weights

    _, path = report_run
    cells = path.parent / "cells"
    choice = UpstreamChoice("aalbert_3L", "unused")
    weights = learned_layer_weights(Cell("speaker_utterance", choice), cells)
    results = json.loads((cells / "speaker_utterance" / "aalbert_3L" / "weighted_sum" / "results.json").read_text())
    assert len(weights) == 4 and abs(sum(weights) - 1) < 1e-6
    assert weights == pytest.approx(results["layer_weights"])
    with pytest.raises(ValueError, match="only for the weighted sum"):
        learned_layer_weights(Cell("speaker_utterance", choice, layer=2), cells)


def test_report_proportion_sweep(report_run):
    _, path = report_run
    rows = read_rows(path.parent / "proportion.csv")
    assert [(r["upstream"], float(r["train_proportion"])) for r in rows] == [
        ("fbank", 0.05),
        ("fbank", 1.0),
        ("aalbert_3L", 0.05),
        ("aalbert_3L", 1.0),
        ("mel_raw", 0.05),  # an added baseline gets the sweep too
        ("mel_raw", 1.0),
    ]
    small, full = int(rows[0]["train_utterances"]), int(rows[1]["train_utterances"])
    assert small < full
    assert imread(path.parent / "proportion.png").shape[:2] == (400, 550)


def test_report_rerun_skips_finished_cells(report_run):
    from analysis import report

    argv, path = report_run
    results = sorted(path.parent.glob("cells/**/results.json"))
    assert len(results) == 2 + 5 + 2 + 2  # layer cells, one proportion cell per upstream, mel_raw's two
    before = {p: p.stat().st_mtime_ns for p in results}
    # An interrupted cell (checkpoint written, no results yet) continues instead of restarting.
    interrupted = path.parent / "cells" / "speaker_utterance" / "aalbert_3L" / "layer_2" / "results.json"
    interrupted.unlink()
    report.main(argv)
    assert interrupted.is_file()
    assert all(p.stat().st_mtime_ns == before[p] for p in results if p != interrupted)


def test_report_refuses_cells_trained_otherwise(report_run):
    from analysis import report

    argv, _ = report_run
    changed = [item.replace("runner.total_steps=2", "runner.total_steps=3") for item in argv]
    with pytest.raises(ValueError, match=r"made with other settings .*config.runner.total_steps: 2 -> 3"):
        report.main(changed)


def test_a_switch_added_to_a_task_keeps_finished_cells_valid():
    from analysis.keys import differences

    stored = {"seed": 1, "config": {"expert": {"dropout": 0.0}, "runner": {"total_steps": 500}}}
    defaults = {"config": {"expert": {"dropout": 0.0, "standardize": False}, "runner": {"total_steps": 60}}}
    current = {"seed": 1, "config": {"expert": {"dropout": 0.0, "standardize": False}, "runner": {"total_steps": 500}}}
    assert differences(stored, current, defaults) == []  # the new switch sits at its default
    switched = {**current, "config": {**current["config"], "expert": {"dropout": 0.0, "standardize": True}}}
    assert differences(stored, switched, defaults) == ["config.expert.standardize: (not recorded) -> True"]
    longer = {**current, "config": {**current["config"], "runner": {"total_steps": 600}}}
    assert differences(stored, longer, defaults) == ["config.runner.total_steps: 500 -> 600"]
    assert differences({**stored, "removed": 3}, current, defaults) == ["removed: 3 -> (not a setting any more)"]
    assert differences(stored, {**current, "seed": 2}, defaults) == ["seed: 1 -> 2"]


def test_a_frozen_probe_is_the_same_cell_whatever_the_upstream_learning_rate():
    """optimizer.upstream_lr trains nothing in a frozen probe: a baseline made by a study that
    fine-tunes is read back by one that does not; a fine-tuned cell is still another cell."""
    from analysis.cells import cell_differences

    def key(fine_tune, upstream_lr):
        return {"fine_tune": fine_tune, "config": {"optimizer": {"lr": 1e-3, "upstream_lr": upstream_lr}}}

    defaults = {"config": {"optimizer": {"lr": 1e-3, "upstream_lr": None}}}
    assert cell_differences(key(False, 1e-4), key(False, None), defaults) == []
    assert cell_differences(key(True, 1e-4), key(True, None), defaults) == ["config.optimizer.upstream_lr: 0.0001 -> None"]
    lower = {"fine_tune": False, "config": {"optimizer": {"lr": 1e-4, "upstream_lr": None}}}
    assert cell_differences(key(False, None), lower, defaults) == ["config.optimizer.lr: 0.001 -> 0.0001"]


def test_report_stages_are_switched_by_name(tmp_path):
    from analysis import report

    path = report.main(
        ["-u", "fbank", "-d", "speaker_utterance", "--stages", "weighted_sum", "--speed-utterances", "1", "-p", str(tmp_path)]
        + FEW_STEPS
    )
    text = path.read_text()
    assert "## Probes on the learned weighted sum" in text
    assert "## Layer-wise" not in text and "## Label-proportion" not in text
    assert [p.parent.name for p in tmp_path.glob("cells/**/results.json")] == ["weighted_sum"]


def test_a_checkpoint_and_corpus_are_keyed_by_content_and_identity_not_spelling(tmp_path, monkeypatch):
    """A finished cell is read back whether the command named its corpus with a relative or an
    absolute path, and wherever its upstream checkpoint now lies; other bytes are another cell."""
    from analysis.cells import cell_key, upstream_content

    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "model.ckpt").write_bytes(b"weights")
    (tmp_path / "moved.ckpt").write_bytes(b"weights")
    (tmp_path / "other.ckpt").write_bytes(b"other weights")

    def run(ckpt, root, **runner):
        return {"upstream_ckpt": ckpt, "config": {"runner": {"max_keep": 1, **runner}, "data": {"root": root}}}

    key = cell_key(run("model.ckpt", "corpus", feature_cache="auto"), upstream_content("model.ckpt"))
    same = run(str(tmp_path / "moved.ckpt"), str(tmp_path / "corpus"))
    assert key == cell_key(same, upstream_content(same["upstream_ckpt"]))
    assert key != cell_key(run("model.ckpt", "corpus"), upstream_content("other.ckpt"))


def test_proportions_that_train_on_the_same_utterances_are_named():
    from analysis.proportion import same_subsets

    def row(proportion, count, upstream="fbank"):
        return {"upstream": upstream, "task": "phone_linear", "train_proportion": proportion, "train_utterances": count}

    rows = [row(0.001, 9), row(0.01, 9), row(0.1, 9), row(1.0, 60), row(0.1, 6, "mel"), row(1.0, 60, "mel")]
    lines = same_subsets(rows)
    assert lines == [
        "phone_linear, fbank: proportions 0.001, 0.01, 0.1 all trained on the same 9 utterances (every class keeps one "
        "utterance at least): one point, not a trend; use a larger corpus or larger proportions"
    ]


def test_a_fine_tuned_cell_leaves_the_shared_upstream_untouched(tiny_checkpoint, tmp_path):
    """Fine-tuning trains its upstream in place: a cell must not fine-tune the model its caller
    shares with later cells (they would probe, and cache, changed weights)."""
    from analysis.cells import Cell, ProbeSettings, UpstreamChoice, run_cell

    choice = UpstreamChoice("aalbert_3L", str(tiny_checkpoint))
    shared = choice.build(0)
    before = {name: value.clone() for name, value in shared.state_dict().items()}
    settings = ProbeSettings(overrides=["runner.total_steps=2", "runner.eval_step=2", "optimizer.lr=0.1"])
    results = run_cell(Cell("speaker_utterance", choice, fine_tune=True), tmp_path, settings, shared)
    assert results["fine_tune"] is True and results["steps"] == 2
    assert all(torch.equal(before[name], value) for name, value in shared.state_dict().items())

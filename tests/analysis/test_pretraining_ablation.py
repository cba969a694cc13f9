"""scripts/pretraining_ablation.py end to end with a tiny model on the demo data: each variant is
pretrained and probed beside the surface baselines, and a rerun reads everything back."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REPO, TINY
from corpora.root import DEMO_ROOT
from pretrain.settings import load_settings
from upstream import Upstream
from upstream.files import read_upstream_checkpoint


def load_script():
    spec = importlib.util.spec_from_file_location("pretraining_ablation", REPO / "scripts" / "pretraining_ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_argv(out, steps: int, *variants: str) -> list[str]:
    """The ablation on the demo corpus with a tiny model and 2-update probes."""
    return [
        "-p", str(out), "--pretrain-corpus", str(DEMO_ROOT), "--eval-corpus", str(DEMO_ROOT),
        "--steps", str(steps), "--variants", *variants, "-d", "speaker_utterance",
        "--pretrain-override", *TINY, "runner.save_step=2", "data.corpus_cmvn_utterances=4",
        "-o", "runner.total_steps=2", "runner.eval_step=2",
    ]  # fmt: skip


def test_variants_and_baselines_are_probed_alike_and_read_back(tmp_path):
    ablation = load_script()
    argv = tiny_argv(tmp_path / "out", 2, "base", "span3_corpus")
    report = ablation.main(argv)
    rows = json.loads((tmp_path / "out" / "ablation.json").read_text())
    # Two variants, then the baselines a pooled task can read: not mel, nor base's own input, both
    # normalised per utterance; span3_corpus's own input keeps each utterance's mean.
    # Then random weights of each variant's architecture (the default --random-seeds 11).
    assert [(row["upstream"], row["kind"]) for row in rows] == [
        ("base", "variant"), ("span3_corpus", "variant"), ("fbank", "baseline"), ("mel_raw", "baseline"),
        ("model_input_span3_corpus", "baseline"), ("base_random11", "random"), ("span3_corpus_random11", "random"),
    ]  # fmt: skip
    text = report.read_text()
    assert "| span3_corpus | masking.span=3 data.corpus_cmvn=true | 2 |" in text
    variant = tmp_path / "out" / "variants" / "span3_corpus"
    assert (variant / "pretrain" / "aalbert_3L" / "best.ckpt").is_file()
    random_config = read_upstream_checkpoint(variant / "random" / "aalbert_3L_seed11.ckpt")[0]
    assert random_config == read_upstream_checkpoint(variant / "pretrain" / "aalbert_3L" / "best.ckpt")[0]
    mtime = report.stat().st_mtime_ns
    assert ablation.main(argv) == report and json.loads((tmp_path / "out" / "ablation.json").read_text()) == rows
    assert report.stat().st_mtime_ns >= mtime


def test_step_checkpoints_are_probed_against_their_updates(tmp_path):
    ablation = load_script()
    argv = tiny_argv(tmp_path / "out", 4, "base")
    for never in ("3", "6"):  # not a multiple of runner.save_step; beyond the runs
        with pytest.raises(ValueError, match=f"--probe-updates {never}: the runs keep a checkpoint every 2 updates up to 4"):
            ablation.main([*argv, "--probe-updates", never])
        assert not (tmp_path / "out").exists(), "refused before anything was pretrained"
    report = ablation.main([*argv, "--probe-updates", "2"])
    rows = json.loads((tmp_path / "out" / "ablation.json").read_text())
    variants = {(row["upstream"], row["run"], row["updates"]) for row in rows if row["kind"] == "variant"}
    assert variants == {("base", "base", 4), ("base@2", "base", 2)}
    assert "## Probes against updates" in report.read_text() and (tmp_path / "out" / "ablation_updates.png").is_file()


def test_no_pretrain_probes_an_unfinished_run_as_it_stands(tmp_path):
    from pretrain.runner import pretrain

    ablation = load_script()
    argv = tiny_argv(tmp_path / "out", 4, "base", "span3_corpus")
    args = ablation.parse_args(argv)
    folders = []
    for variant in args.variants:  # long runs stopped half-way, to be continued later with -e
        plan = ablation.plan_for(args, variant)
        folders.append(plan.pretrain_dir("aalbert_3L", 1337))
        pretrain(upstream="aalbert_3L", experiment=folders[-1], config_file=plan.recipe, stop_at_step=2,
                 overrides=ablation.pretraining_overrides(plan, 1337, 4), device="cpu")  # fmt: skip
    report = ablation.main([*argv, "--no-pretrain", "--probe-updates", "2"])
    rows = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert [(row["upstream"], row["updates"]) for row in rows if row["kind"] == "variant"] == [
        ("base@2", 2), ("span3_corpus@2", 2)
    ]  # fmt: skip
    # The networks' own inputs differ (CMVN per utterance or per corpus): each baseline is named
    # after its run, not after the checkpoint that stood for it.
    assert "model_input_span3_corpus" in {row["upstream"] for row in rows if row["kind"] == "baseline"}
    assert "| 2 of 4 (unfinished) |" in report.read_text()
    assert not any((folder / "states-00000004.ckpt").exists() for folder in folders), "nothing pretrained"


@pytest.mark.parametrize("variant", list(load_script().VARIANTS))
def test_every_variant_builds_its_network(variant):
    """A variant's overrides are all known keys (load_settings refuses others) and its encoder
    settings reach the network: a typo in VARIANTS fails here, not an hour into a run."""
    ablation = load_script()
    settings = load_settings(ablation.UPSTREAM, ablation.RECIPE, list(ablation.VARIANTS[variant]))
    model = Upstream(settings.model)
    for override in ablation.VARIANTS[variant]:
        key, value = override.split("=", 1)
        if key.startswith("model.encoder."):
            assert str(getattr(model.encoder.config, key.rsplit(".", 1)[1])).lower() == value.lower(), override

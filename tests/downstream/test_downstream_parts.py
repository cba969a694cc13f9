"""The pieces of the downstream core: frame-rate matching, featurizer, splits, subsets, label
formats, discovery, and the messages bad input gets."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import run_downstream
from conftest import REPO, tiny_config
from downstream.discovery import TASKS_DIR, load_task, task_folders
from downstream.featurizer import Featurizer
from downstream.frames import FrameGrid
from downstream.heads.ctc import ctc_frames_needed
from downstream.phone_ctc.dataset import phone_sequence
from downstream.heads.ctc import PaddedLSTM
from corpora.phone_splits import PhoneDataConfig, load_phone_splits
from downstream.phone_datasets import build_phone_frame_datasets
from downstream.settings import load_task_config, runner_sections
from corpora.speaker_splits import SpeakerDataConfig, load_speaker_splits
from downstream.subset import proportion_subset
from upstream import FrontendConfig, Upstream, UpstreamConfig, build_upstream
from corpora.label_frames import read_frame_labels

DEMO = REPO / "data" / "demo"
SUBSETS = ("train-clean-100", "dev-clean", "test-clean")


def baseline(frontend: FrontendConfig) -> Upstream:
    return Upstream(UpstreamConfig(family="baseline", frontend=frontend))


def copy_corpus(tmp_path: Path) -> Path:
    """The demo corpus with linked audio and its own, editable, label files."""
    root = tmp_path / "corpus"
    root.mkdir()
    for subset in SUBSETS:
        (root / subset).symlink_to(DEMO / subset, target_is_directory=True)
    shutil.copytree(DEMO / "alignments", root / "alignments")
    shutil.copy(DEMO / "phones.txt", root / "phones.txt")
    return root


# ---------------------------------------------------------------------------------------------
# Frame-rate matching


@pytest.mark.parametrize(
    "upstream, first_label, step",
    [
        (baseline(FrontendConfig()), 0, 1),  # centred STFT: frame j centred on sample 160 j
        (Upstream(tiny_config()), 1, 3),  # 3 stacked frames centred on raw frame 3 j + 1
        (build_upstream("fbank"), 1, 1),  # Kaldi snip_edges: centre at 200 + 160 j samples
    ],
)
def test_each_frame_takes_the_label_at_its_centre(upstream, first_label, step):
    grid = FrameGrid(upstream)
    num_samples = 16000
    wav = torch.randn(num_samples)
    with torch.inference_mode():
        frames = int(upstream([wav])["lengths"][0])
    assert int(grid.num_frames([num_samples])[0]) == frames  # the grid predicts the upstream's count
    labels = torch.arange(100)  # label t = t: the aligned labels are the source positions
    aligned = grid.align(labels, num_samples, "utt")
    expected = (first_label + step * torch.arange(frames)).clamp(max=99)
    assert torch.equal(aligned, expected)
    assert grid.hop == 160 * step


def test_labels_off_by_more_than_one_frame_raise_naming_the_utterance():
    grid = FrameGrid(baseline(FrontendConfig()))
    grid.align(torch.zeros(99, dtype=torch.long), 16000, "fine")  # one short: tolerated
    grid.align(torch.zeros(101, dtype=torch.long), 16000, "fine")  # one long: tolerated
    for count in (97, 103):
        with pytest.raises(ValueError, match=rf"utterance 1-2-3: the label file has {count} frames .* has 100"):
            grid.align(torch.zeros(count, dtype=torch.long), 16000, "1-2-3")


# ---------------------------------------------------------------------------------------------
# Featurizer


def test_weighted_sum_starts_uniform_and_one_layer_picks_it():
    states = [torch.full((2, 3, 4), float(i)) for i in range(5)]
    weighted = Featurizer(5)
    assert weighted.layer_weights() == pytest.approx([0.2] * 5)
    assert torch.allclose(weighted(states), torch.full((2, 3, 4), 2.0))
    assert weighted.mode == "weighted_sum"
    last = Featurizer(5, layer=-1)
    assert torch.equal(last(states), states[4]) and last.mode == "layer_4" and not list(last.parameters())
    with pytest.raises(ValueError, match=r"layer 5 does not exist: the upstream has 5 hidden states"):
        Featurizer(5, layer=5)


# ---------------------------------------------------------------------------------------------
# Subsets and splits


def test_proportion_subset_keeps_every_class_and_is_seeded():
    classes = [np.array([i % 7]) for i in range(700)]
    chosen = proportion_subset(classes, 0.05, seed=3)
    assert len(chosen) == 35 and len(set(chosen)) == 35
    assert {i % 7 for i in chosen} == set(range(7))
    assert chosen == proportion_subset(classes, 0.05, seed=3)
    assert chosen != proportion_subset(classes, 0.05, seed=4)
    tiny = proportion_subset(classes, 0.001, seed=3)  # quota 1, but 7 classes need 7
    assert len(tiny) == 7 and {i % 7 for i in tiny} == set(range(7))
    assert proportion_subset(classes, 1.0, seed=3) == list(range(700))


@pytest.mark.parametrize("proportion", [0, -0.5, 1.5, "half"])
def test_train_proportion_outside_zero_one_is_refused(proportion):
    with pytest.raises(ValueError, match=r"runner.train_proportion must be a number in \(0, 1\]"):
        proportion_subset([np.array([0])], proportion, seed=0)


def test_speaker_split_puts_every_speaker_in_every_split():
    splits = load_speaker_splits(SpeakerDataConfig())
    speakers = {name: {u.speaker for u in getattr(splits, name)} for name in ("train", "dev", "test")}
    assert speakers["train"] == speakers["dev"] == speakers["test"] == set(splits.speakers)
    assert len(splits.speakers) == 10 and (len(splits.train), len(splits.dev), len(splits.test)) == (40, 10, 10)
    ids = [{u.utt_id for u in getattr(splits, name)} for name in ("train", "dev", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    again = load_speaker_splits(SpeakerDataConfig())
    assert [u.utt_id for u in again.dev] == [u.utt_id for u in splits.dev]
    other = load_speaker_splits(SpeakerDataConfig(split_seed=7))
    assert [u.utt_id for u in other.dev] != [u.utt_id for u in splits.dev]


def test_subset_split_with_unseen_speakers_is_refused():
    with pytest.raises(ValueError, match=r"dev speakers \['1040', .* never occur in training"):
        load_speaker_splits(SpeakerDataConfig(split_by="subset"))


# ---------------------------------------------------------------------------------------------
# Phone label formats


def test_frames_format_reads_all_three_subsets():
    splits = load_phone_splits(PhoneDataConfig())
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (60, 24, 24)
    assert splits.phone_names[0] == "sil" and len(splits.phone_names) == 40


def test_s3prl_format_splits_train_like_s3prl(tmp_path):
    labels = read_frame_labels(DEMO / "alignments" / "train-clean-100.frames.txt")
    ids = sorted(labels)
    label_dir = tmp_path / "s3prl"
    label_dir.mkdir()
    (label_dir / "converted_aligned_phones.txt").write_text(
        "".join(f"{i} {' '.join(map(str, labels[i]))}\n" for i in ids)
    )
    (label_dir / "train_split.txt").write_text("\n".join(ids[:50]) + "\n")
    (label_dir / "test_split.txt").write_text("\n".join(ids[50:]) + "\n")
    splits = load_phone_splits(PhoneDataConfig(format="s3prl", label_dir=str(label_dir)))
    shuffled = ids[:50]
    random.Random(1337).shuffle(shuffled)  # what s3prl does with random.seed(1337)
    assert [x.utterance.utt_id for x in splits.train] == shuffled[:45]
    assert [x.utterance.utt_id for x in splits.dev] == shuffled[45:]
    assert [x.utterance.utt_id for x in splits.test] == ids[50:]
    assert len(splits.phone_names) == 41 and splits.phone_names[40] == "40"  # no names file: indices
    assert torch.equal(splits.test[0].labels, torch.tensor(labels[ids[50]]))


def test_an_utterance_without_labels_is_named(tmp_path):
    root = copy_corpus(tmp_path)
    frames = root / "alignments" / "dev-clean.frames.txt"
    lines = frames.read_text().splitlines()
    frames.write_text("\n".join(lines[1:]) + "\n")
    missing = lines[0].split()[0]
    with pytest.raises(ValueError, match=rf"utterance {missing} .* has no labels in .*dev-clean.frames.txt"):
        load_phone_splits(PhoneDataConfig(root=str(root)))


def test_labels_that_disagree_with_the_audio_are_named(tmp_path):
    root = copy_corpus(tmp_path)
    frames = root / "alignments" / "test-clean.frames.txt"
    lines = frames.read_text().splitlines()
    utt, *labels = lines[3].split()
    lines[3] = " ".join([utt, *labels[:-5]])
    frames.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"utterance {utt}: the label file has {len(labels) - 5} frames .* has {len(labels)}"):
        build_phone_frame_datasets(PhoneDataConfig(root=str(root)), FrameGrid(build_upstream("fbank")))


def test_a_root_without_the_subsets_lists_what_it_has(tmp_path):
    root = tmp_path / "corpus"
    (root / "train-other-500").mkdir(parents=True)
    shutil.copy(DEMO / "phones.txt", root / "phones.txt")
    with pytest.raises(FileNotFoundError, match=r"subset 'train-clean-100' not found .* available: \['train-other-500'\]"):
        load_phone_splits(PhoneDataConfig(root=str(root)))
    with pytest.raises(FileNotFoundError, match=r"subset 'train-clean-100' not found"):
        load_speaker_splits(SpeakerDataConfig(root=str(root)))
    with pytest.raises(FileNotFoundError, match=r"corpus root not found: .*nowhere; set data.root"):
        load_speaker_splits(SpeakerDataConfig(root=str(tmp_path / "nowhere")))


def test_phone_sequences_collapse_runs_and_drop_silence():
    labels = torch.tensor([0, 0, 5, 5, 5, 3, 0, 0, 3, 3, 7, 0])
    sequence = phone_sequence(labels, silence_index=0)
    assert sequence.tolist() == [5, 3, 3, 7]
    assert ctc_frames_needed(sequence) == 5  # 3 3 needs a blank between
    assert phone_sequence(labels, silence_index=None).tolist() == [0, 5, 3, 0, 3, 7, 0]


def test_padded_lstm_matches_a_packed_bidirectional_lstm():
    torch.manual_seed(0)
    layer = PaddedLSTM(5, 4, bidirectional=True)
    reference = torch.nn.LSTM(5, 4, bidirectional=True, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(reference, name).copy_(getattr(layer.forward_rnn, name))
            getattr(reference, f"{name}_reverse").copy_(getattr(layer.backward_rnn, name))
    lengths = torch.tensor([7, 4, 2])
    x = torch.randn(3, 7, 5) * (torch.arange(7)[None, :, None] < lengths[:, None, None])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = torch.nn.utils.rnn.pad_packed_sequence(reference(packed)[0], batch_first=True)
    got = layer(x, lengths)
    for i, length in enumerate(lengths.tolist()):
        assert torch.allclose(got[i, :length], expected[i, :length], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Discovery and the command line


def write_task(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_a_task_folder_missing_a_file_is_named(tmp_path):
    write_task(tmp_path / "half_done", {"config.yaml": "runner: {}\n", "expert.py": ""})
    with pytest.raises(ValueError, match=r"task folder .*half_done is missing dataset.py"):
        task_folders(tmp_path)


def test_an_expert_of_the_wrong_base_is_named(tmp_path):
    write_task(
        tmp_path / "wrong_base",
        {
            "config.yaml": "runner: {}\n",
            "dataset.py": "def build_datasets(config, grid): ...\n",
            "expert.py": "class DownstreamExpert:\n    pass\n",
        },
    )
    with pytest.raises(TypeError, match=r"task folder .*wrong_base: expert.py must define class DownstreamExpert, a subclass"):
        load_task("wrong_base", tmp_path)


def test_unknown_task_and_upstream_list_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"unknown task 'phone_lineer'; available tasks: .*phone_linear"):
        run_downstream.main(["-u", "fbank", "-d", "phone_lineer", "-p", str(tmp_path / "a")])
    with pytest.raises(ValueError, match=r"unknown upstream 'albert_6L'; available: .*aalbert_6L"):
        run_downstream.main(["-u", "albert_6L", "-d", "phone_linear", "-p", str(tmp_path / "b")])


def test_bad_overrides_are_refused_before_training(tmp_path):
    with pytest.raises(KeyError, match=r"no key 'total_step' at runner"):
        run_downstream.main(["-u", "fbank", "-d", "phone_linear", "-p", str(tmp_path / "a"), "-o", "runner.total_step=3"])
    with pytest.raises(ValueError, match=r"runner.train_proportion must be a number in \(0, 1\]"):
        run_downstream.main(["-u", "fbank", "-d", "phone_linear", "-p", str(tmp_path / "b"), "-o", "runner.train_proportion=0"])
    with pytest.raises(ValueError, match=r"bad.yaml.expert: unknown key 'hidden'; known keys: \['dropout', 'hidden_sizes'\]"):
        run_downstream.main(["-u", "fbank", "-d", "phone_linear", "-p", str(tmp_path / "c"), "-c", str(bad_config(tmp_path))])


def test_numbers_in_exponent_notation_are_numbers():
    runner, optimizer = runner_sections(
        load_task_config(load_task("phone_linear"), None, ["optimizer.lr=3e-3", "runner.train_proportion=1e-2"])
    )
    assert optimizer.lr == 0.003 and runner.train_proportion == 0.01
    with pytest.raises(TypeError, match=r"optimizer.lr must be a number, got 'fast'"):
        runner_sections(load_task_config(load_task("phone_linear"), None, ["optimizer.lr=fast"]))


def bad_config(tmp_path: Path) -> Path:
    text = (TASKS_DIR / "phone_linear" / "config.yaml").read_text() + "expert:\n  hidden: []\n"
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


def test_help_lists_tasks_and_upstreams(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_downstream.main(["-h"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    tasks = next(line for line in text.splitlines() if line.startswith("tasks: "))[len("tasks: ") :].split(", ")
    assert tasks == sorted(tasks) and {"example", "phone_1hidden", "phone_2hidden", "phone_ctc", "phone_linear"} <= set(tasks)
    assert "upstreams: aalbert_12L" in text and "fbank" in text


def test_an_existing_experiment_is_not_overwritten(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "results.json").write_text("{}")
    with pytest.raises(ValueError, match=r"already holds a run; resume it with -e"):
        run_downstream.main(["-u", "fbank", "-d", "phone_linear", "-p", str(tmp_path / "exp")])


def test_resume_refuses_settings_it_cannot_change(tmp_path):
    with pytest.raises(ValueError, match=r"-e resumes a run with its own saved settings; -u, -l cannot change them"):
        run_downstream.main(["-e", str(tmp_path), "-u", "fbank", "-l", "0"])


def test_the_weighted_sum_finds_the_one_informative_layer():
    """Four hidden states, one of which carries the label (the others: noise of twice its scale).
    A linear probe on the learnable weighted sum ends within noise of a probe on that layer
    (3,000 updates at the default rate)."""
    carrier, classes, width = 2, 4, 16
    torch.set_num_threads(1)  # tiny products: one thread is fastest (the fixture restores the count)
    means = torch.randn(classes, width, generator=torch.Generator().manual_seed(0)) * 0.5

    def states(count: int, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, classes, (count,), generator=generator)
        layers = [torch.randn(count, 1, width, generator=generator) * (1.0 if i == carrier else 2.0) for i in range(4)]
        layers[carrier] += means[labels][:, None]
        return layers, labels

    train_states, train_labels = states(2000, 1)
    test_states, test_labels = states(2000, 2)

    def probe(layer):
        torch.manual_seed(0)
        featurizer, head = Featurizer(4, layer), torch.nn.Linear(width, classes)
        optimizer = torch.optim.AdamW([*featurizer.parameters(), *head.parameters()], lr=1e-3, weight_decay=0)
        for _ in range(3000):
            index = torch.randint(0, 2000, (32,))
            logits = head(featurizer([state[index] for state in train_states])[:, 0])
            loss = torch.nn.functional.cross_entropy(logits, train_labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            accuracy = (head(featurizer(test_states)[:, 0]).argmax(-1) == test_labels).float().mean().item()
        return accuracy, featurizer.layer_weights()

    alone, _ = probe(carrier)
    mixed, weights = probe(None)
    assert alone > 0.6  # the informative layer is readable
    # Within noise: the standard error of an accuracy near 0.85 on 2,000 test items is 0.008.
    assert mixed >= alone - 0.02, (mixed, alone, weights)
    assert weights[carrier] == max(weights) and weights[carrier] > 0.6, weights


def test_a_corpus_without_audio_or_alignments_names_the_real_problem(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"subset 'train-clean-100' not found"):  # not "no phones.txt"
        load_phone_splits(PhoneDataConfig(root=str(empty)))
    root = copy_corpus(tmp_path)
    shutil.rmtree(root / "alignments")
    with pytest.raises(FileNotFoundError, match=r"no phone labels for train-clean-100: .* python -m corpora.alignments"):
        load_phone_splits(PhoneDataConfig(root=str(root)))
    (root / "phones.txt").unlink()
    with pytest.raises(ValueError, match=r"no phone list .*phones.txt: .*python -m corpora.alignments"):
        load_phone_splits(PhoneDataConfig(root=str(root)))


def test_the_default_experiment_name_tells_layer_fine_tune_and_seed_apart():
    from downstream.commands import DEFAULT_SEED, default_name
    from downstream.probe_checkpoint import RunSpec

    def name(layer=None, fine_tune=False, seed=DEFAULT_SEED):
        return default_name(RunSpec("phone_linear", "aalbert_3L", "a.ckpt", layer, fine_tune, seed, {}))

    assert name() == "phone_linear_aalbert_3L"  # the quick start's folder, as before
    names = [name(), name(layer=-1), name(layer=0), name(fine_tune=True), name(seed=2), name(layer=2, fine_tune=True)]
    assert len(set(names)) == len(names), names
    assert name(layer=-1, fine_tune=True, seed=7) == "phone_linear_aalbert_3L_layer-1_finetune_seed7"


def test_a_tasks_dir_of_ones_own_keeps_the_built_in_tasks(tmp_path):
    tasks = tmp_path / "mytasks"
    write_task(tasks / "phone_wide", {"config.yaml": "extends: phone_linear\nrunner:\n  total_steps: 3\n"})
    write_task(tasks / "phone_typo", {"config.yaml": "extends: phone_lineer\n"})
    folders = task_folders(tasks)
    assert folders["phone_wide"] == tasks / "phone_wide" and folders["example"] == TASKS_DIR / "example"
    assert load_task("phone_wide", tasks).config_files == (
        TASKS_DIR / "phone_linear" / "config.yaml",
        tasks / "phone_wide" / "config.yaml",
    )
    assert load_task("example", tasks).folder == TASKS_DIR / "example"
    with pytest.raises(
        ValueError, match=r"phone_typo/config.yaml: 'extends: phone_lineer' names no task; available tasks: .*phone_linear"
    ):
        load_task("phone_typo", tasks)
    # A task of the same name as a built-in one takes its place.
    shutil.copytree(TASKS_DIR / "example", tasks / "speaker_frame", ignore=shutil.ignore_patterns("__pycache__"))
    assert task_folders(tasks)["speaker_frame"] == tasks / "speaker_frame"

"""``python -m corpora.alignments`` (also under its former name ``downstream.alignments``): MFA
TextGrids and CTM files -> 10 ms frames.txt.

Round trip: the demo corpus's segments (one phone per line, times to 10 microseconds) are
written as TextGrids and as a CTM file in the forms aligners write (upper case, stress digits,
ARPAbet variants, Kaldi word-position suffixes, silence as "", sil, sp, spn or as a gap), then
converted back and compared with the demo's frames.txt.
"""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import REPO
from corpora import alignments
from corpora.label_frames import read_frame_labels
from faults import assert_one_line_error
from utility.cli import run_cli

DEMO = REPO / "data" / "demo"
PHONES = DEMO / "phones.txt"
SILENCES = ("", "sil", "sp", "spn")
VOWELS = {"aa", "ae", "ah", "ao", "aw", "ay", "eh", "er", "ey", "ih", "iy", "ow", "oy", "uh", "uw"}


def read_segments(split: str) -> dict[str, list[tuple[str, str, str, str]]]:
    """utt_id -> (start, end, phone, native symbol) rows of the demo's segments file."""
    segments = defaultdict(list)
    for line in (DEMO / "alignments" / f"{split}.segments.txt").read_text().splitlines():
        utt_id, start, end, phone, native = line.split()
        segments[utt_id].append((start, end, phone, native))
    return dict(segments)


def aligner_symbol(phone: str, native: str, k: int) -> str:
    """How an aligner might spell the phone: silence in each of its forms, 'ax' for the
    schwas the synthesiser called ax, upper case with a stress digit on vowels."""
    if phone == "sil":
        return SILENCES[k % len(SILENCES)]
    if native == "ax":
        return "AX0"
    return phone.upper() + (str(k % 3) if phone in VOWELS else "")


def write_textgrid(path: Path, rows: list[tuple[str, str, str, str]], short: bool) -> None:
    """A two-tier TextGrid (words, then phones) in Praat's long or short text format."""
    end = rows[-1][1]
    tiers = [
        ("words", [("0", end, "some words")]),
        ("phones", [(s, e, aligner_symbol(p, n, k)) for k, (s, e, p, n) in enumerate(rows)]),
    ]
    if short:
        lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "0", end, "<exists>", str(len(tiers))]
        for name, intervals in tiers:
            lines += ['"IntervalTier"', f'"{name}"', "0", end, str(len(intervals))]
            for start, stop, text in intervals:
                lines += [start, stop, f'"{text}"']
    else:
        lines = [
            'File type = "ooTextFile"',
            'Object class = "TextGrid"',
            "",
            "xmin = 0",
            f"xmax = {end}",
            "tiers? <exists>",
            f"size = {len(tiers)}",
            "item []:",
        ]
        for number, (name, intervals) in enumerate(tiers, start=1):
            lines += [
                f"    item [{number}]:",
                '        class = "IntervalTier"',
                f'        name = "{name}"',
                "        xmin = 0",
                f"        xmax = {end}",
                f"        intervals: size = {len(intervals)}",
            ]
            for index, (start, stop, text) in enumerate(intervals, start=1):
                lines += [
                    f"        intervals [{index}]:",
                    f"            xmin = {start}",
                    f"            xmax = {stop}",
                    f'            text = "{text}"',
                ]
    path.write_text("\n".join(lines) + "\n")


def write_ctm(path: Path, segments: dict[str, list[tuple[str, str, str, str]]]) -> None:
    """Kaldi-style phone CTM with Kaldi's position suffixes; silence partly left out (a gap),
    but not at the end: a CTM must reach the end of the utterance (Kaldi's do)."""
    lines = []
    for utt_id, rows in segments.items():
        for k, (start, end, phone, native) in enumerate(rows):
            if phone == "sil" and k % 2 == 0 and k < len(rows) - 1:
                continue  # a gap is silence too
            duration = f"{float(end) - float(start):.5f}"
            symbol = "SIL" if phone == "sil" else aligner_symbol(phone, native, k) + "_" + "BIES"[k % 4]
            lines.append(f"{utt_id} 1 {start} {duration} {symbol}")
    path.write_text("\n".join(lines) + "\n")


def assert_equal_but_ties(converted: dict[str, list[int]], split: str, segments) -> int:
    """Frames equal the demo's, except where a boundary falls exactly on a frame centre: the
    demo's labels came from unrounded times, the segments file keeps 10 microseconds, so at
    such a tie either neighbour may be right. Returns the number of ties."""
    expected = read_frame_labels(DEMO / "alignments" / f"{split}.frames.txt")
    assert sorted(converted) == sorted(expected)
    names = {name: i for i, name in enumerate(line.split()[0] for line in PHONES.read_text().splitlines())}
    ties = 0
    for utt_id, labels in converted.items():
        assert len(labels) == len(expected[utt_id]), utt_id
        rows = segments[utt_id]
        tie_frames = {}
        for before, after in zip(rows, rows[1:]):
            boundary = round(float(before[1]) * 1e6)
            if (boundary - 5000) % 10000 == 0:
                tie_frames[(boundary - 5000) // 10000] = {names[before[2]], names[after[2]]}
        ties += len(tie_frames)
        for t, (got, want) in enumerate(zip(labels, expected[utt_id])):
            if t in tie_frames:
                assert {got, want} <= tie_frames[t], (utt_id, t)
            else:
                assert got == want, (utt_id, t)
    return ties


@pytest.mark.parametrize("split", ["train-clean-100", "dev-clean", "test-clean"])
def test_textgrids_reproduce_the_demo_frames(split, tmp_path):
    segments = read_segments(split)
    folder = tmp_path / "aligned"
    for k, (utt_id, rows) in enumerate(segments.items()):
        (folder / utt_id.split("-")[0]).mkdir(parents=True, exist_ok=True)
        write_textgrid(folder / utt_id.split("-")[0] / f"{utt_id}.TextGrid", rows, short=k % 2 == 1)
    out = tmp_path / "frames.txt"
    result = alignments.main(["textgrid", str(folder), "-o", str(out), "--phones", str(PHONES), "--audio", str(DEMO / split)])
    assert not result.mismatched and result.mapped[("ax", "ah")] > 0
    ties = assert_equal_but_ties(read_frame_labels(out), split, segments)
    assert ties < 20


@pytest.mark.parametrize("module", ["corpora.alignments", "downstream.alignments"])
def test_ctm_reproduces_the_demo_frames_from_the_command_line(module, tmp_path):
    split = "dev-clean"
    segments = read_segments(split)
    write_ctm(tmp_path / "phones.ctm", segments)
    out = tmp_path / "frames.txt"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            module,
            "ctm",
            str(tmp_path / "phones.ctm"),
            "-o",
            str(out),
            "--phones",
            str(PHONES),
            "--audio",
            str(DEMO / split),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "wrote 24 utterance(s)" in run.stderr and "ax->ah" in run.stderr
    assert_equal_but_ties(read_frame_labels(out), split, segments)


def test_symbols_fold_and_map_into_the_phone_list():
    mapper = alignments.PhoneMapper(["sil", "ah", "er", "t"], extra_map={"dx": "t"})
    spell = lambda symbol: mapper(alignments.Interval(0, 1, symbol, Path("x"), 1))  # noqa: E731
    assert [spell(s) for s in ("AH0", "ah1_B", "AXR", "ax", "DX", "", "SIL", "sp", "SPN", "T_E")] == [
        1,
        1,
        2,
        1,
        3,
        0,
        0,
        0,
        0,
        3,
    ]
    with pytest.raises(
        alignments.AlignmentError, match=r"x:1: phone 'ZH1' \(folded: 'zh'\) is not in the phone list .* --map zh=PHONE"
    ):
        spell("ZH1")


def test_alignments_ending_off_the_audio_are_named(tmp_path):
    segments = read_segments("test-clean")
    folder = tmp_path / "aligned"
    folder.mkdir()
    for utt_id, rows in segments.items():
        write_textgrid(folder / f"{utt_id}.TextGrid", rows, short=False)
    short_one = sorted(segments)[2]
    rows = segments[short_one]
    write_textgrid(folder / f"{short_one}.TextGrid", rows[:-1], short=False)  # the last phone lost
    args = [
        "textgrid",
        str(folder),
        "-o",
        str(tmp_path / "frames.txt"),
        "--phones",
        str(PHONES),
        "--audio",
        str(DEMO / "test-clean"),
    ]
    with pytest.raises(
        alignments.AlignmentError,
        match=rf"1 utterance\(s\) end more than one frame away .*\n  {short_one}: the alignment ends at",
    ):
        alignments.main(args)
    assert not (tmp_path / "frames.txt").exists()
    result = alignments.main([*args, "--drop-mismatched"])
    assert short_one not in read_frame_labels(tmp_path / "frames.txt") and len(result.labels) == len(segments) - 1


def test_bad_alignment_input_names_the_file_and_line(tmp_path):
    ctm = tmp_path / "bad.ctm"
    ctm.write_text("1050-105001-0000 1 0.00 0.30 SIL\n1050-105001-0000 1 0.30 x AH0\n")
    with pytest.raises(alignments.AlignmentError, match=r"bad.ctm:2: expected a time in seconds, got 'x'"):
        alignments.main(["ctm", str(ctm), "-o", str(tmp_path / "f.txt"), "--phones", str(PHONES)])
    # An alignment for audio that does not exist.
    ctm.write_text("1050-105001-0000 1 0.00 0.30 SIL\n9999-1-0001 1 0.00 0.30 SIL\n")
    with pytest.raises(FileNotFoundError, match=r"bad.ctm:2: utterance 9999-1-0001 has no audio file"):
        alignments.main(
            ["ctm", str(ctm), "-o", str(tmp_path / "f.txt"), "--phones", str(PHONES), "--audio", str(DEMO / "test-clean")]
        )
    grid = tmp_path / "u.TextGrid"
    write_textgrid(grid, [("0", "0.5", "ah", "ah")], short=True)
    with pytest.raises(alignments.AlignmentError, match=r"u.TextGrid: no tier named 'phone' \(tiers: \['words', 'phones'\]\)"):
        alignments.read_alignments("textgrid", [grid], tier="phone")


def test_command_line_mistakes_are_one_line_and_exit_status_2(tmp_path, capsys):
    """Issue 19, case 20 (and 17: -o DIR was a traceback)."""
    ctm, good = tmp_path / "bad.ctm", tmp_path / "good.ctm"
    ctm.write_text("1050-105001-0000 1 0.00 0.30 SIL\n1050-105001-0000 1 0.30 x AH0\n")
    good.write_text("1050-105001-0000 1 0.00 0.30 SIL\n")
    (tmp_path / "out").mkdir()
    cases = [
        (["ctm", str(ctm), "-o", str(tmp_path / "f.txt")], "the following arguments are required: --phones"),
        (
            ["ctm", str(ctm), "-o", str(tmp_path / "f.txt"), "--phones", str(PHONES)],
            "bad.ctm:2: expected a time in seconds, got 'x'",
        ),
        (
            ["ctm", str(good), "-o", str(tmp_path / "out"), "--phones", str(PHONES)],
            f"-o {tmp_path / 'out'} is a folder; give the frames.txt file",
        ),
        (["ctm", str(good), "-o", str(good), "--phones", str(PHONES)], f"-o {good} is one of this command's inputs"),
    ]
    for args, expected in cases:
        with pytest.raises(SystemExit) as stop:
            run_cli(alignments.main, args)
        assert stop.value.code == 2
        assert_one_line_error(capsys.readouterr().err, expected)
    run = subprocess.run([sys.executable, "-m", "downstream.alignments", *cases[1][0]], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2 and assert_one_line_error(run.stderr, cases[1][1])  # the module itself uses run_cli
    assert good.read_text() == "1050-105001-0000 1 0.00 0.30 SIL\n"


def test_a_sub_frame_overlap_from_rounding_is_cut_and_a_real_one_refused(tmp_path):
    ctm = tmp_path / "phones.ctm"
    ctm.write_text("u 1 0.000 0.301 SIL\nu 1 0.300 0.100 AH0\nu 1 0.400 0.100 T\n")  # the first ends 1 ms late
    alignments.main(["ctm", str(ctm), "-o", str(tmp_path / "frames.txt"), "--phones", str(PHONES)])
    names = dict(line.split() for line in PHONES.read_text().splitlines())
    labels = read_frame_labels(tmp_path / "frames.txt")["u"]
    assert labels == [int(names["sil"])] * 30 + [int(names["ah"])] * 10 + [int(names["t"])] * 10
    ctm.write_text("u 1 0.000 0.320 SIL\nu 1 0.300 0.100 AH0\n")  # 20 ms: two phones at once
    with pytest.raises(
        alignments.AlignmentError, match=r"phones.ctm:2: utterance u: the interval starting at 0.300000 s overlaps"
    ):
        alignments.main(["ctm", str(ctm), "-o", str(tmp_path / "frames.txt"), "--phones", str(PHONES)])

"""Phone alignments from forced aligners -> this project's 10 ms ``frames.txt``.

    python -m corpora.alignments textgrid ALIGNED_DIR -o train-clean-100.frames.txt \\
        --phones phones.txt --audio LibriSpeech/train-clean-100
    python -m corpora.alignments ctm phones.ctm -o dev-clean.frames.txt --phones phones.txt

Inputs:

- ``textgrid``: Praat TextGrids (long or short text format) as the Montreal Forced Aligner
  writes them, one per utterance, named ``<utt_id>.TextGrid`` (folders are searched
  recursively). The phone tier is the one named ``phones`` (``--tier``; MFA's multi-speaker
  ``<speaker> - phones`` matches too). Its intervals cover the whole file.
- ``ctm``: ``<utt_id> <channel> <start> <duration> <phone> [<confidence>]`` lines (Kaldi's
  ``ali-to-phones --ctm-output``, MFA's CTM output). Time no line covers is silence.

Output: one line per utterance, sorted by id: the id, then the class index (from ``--phones``,
``name index`` lines) of the phone at each 10 ms frame centre: frame t carries the interval
[start, end) that holds 10t + 5 ms (time no interval covers is silence). T = ceil(samples / 160) from the audio
(``--audio DIR``: ``<utt_id>.flac`` / ``.wav`` found recursively), or from the alignment's end
without ``--audio``. These are the conventions of s3prl's ``converted_aligned_phones.txt``.

Symbols, in this order:

1. folded: lower case, stress digits dropped (``AH0`` -> ``ah``), Kaldi word-position suffixes
   dropped (``ah_B`` -> ``ah``);
2. ``""`` (MFA's empty interval), ``sil``, ``sp`` (short pause) and ``spn`` (spoken noise,
   MFA's label for out-of-vocabulary words) -> the silence class (``--silence``, default ``sil``);
3. a symbol the phone list lacks is mapped by ``ARPABET_MAP`` (the ARPAbet / TIMIT variants
   onto the 39 CMU phones) and then by ``--map FROM=TO`` options; anything still unknown
   raises, naming the file and line.

An utterance whose alignment ends more than one frame away from its audio's end is reported
by name; the conversion stops unless ``--drop-mismatched`` leaves such utterances out.
Overlapping intervals are refused, naming the file and line, except an overlap shorter than half
a frame (``OVERLAP_TOLERANCE_US``, 5 ms): a CTM's start + duration, rounded on an aligner's
10 ms grid, can end a hair after the next interval starts; the earlier interval is then cut
there (no frame centre can fall in such a sliver on both sides).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Optional, Sequence

import soundfile

from utility.cli import ArgumentParser, check_output_is_not_an_input, run_cli

from .index import files_under
from .label_frames import LABEL_HOP, TOLERANCE, resampled_length
from .phone_splits import read_phone_names

SAMPLE_RATE = 16_000
MICROSECONDS = 1_000_000
FRAME_US = MICROSECONDS * LABEL_HOP // SAMPLE_RATE  # 10 ms
OVERLAP_TOLERANCE_US = FRAME_US // 2  # shorter overlaps are rounding: cut, not refused (module doc)
SILENCE_SYMBOLS = ("", "sil", "sp", "spn")
# ARPAbet / TIMIT symbols outside the 39 CMU phones -> the CMU phone they are a variant of.
# Used only for symbols the phone list lacks (a list that has "ax" keeps it).
ARPABET_MAP = {
    "ax": "ah",  # schwa
    "ax-h": "ah",  # devoiced schwa
    "axr": "er",  # r-coloured schwa
    "ix": "ih",  # reduced high vowel
    "ux": "uw",  # fronted u
    "el": "l",  # syllabic l
    "em": "m",  # syllabic m
    "en": "n",  # syllabic n
    "eng": "ng",  # syllabic ng
    "nx": "n",  # nasal flap
    "hv": "hh",  # voiced h
}
FORMATS = ("textgrid", "ctm")


@dataclass(frozen=True)
class Interval:
    """One labelled span, in integer microseconds, and where it was read."""

    start: int
    end: int
    symbol: str
    source: Path
    line: int


@dataclass
class Alignment:
    utt_id: str
    intervals: list[Interval]
    end: int  # microseconds: where the alignment says the audio ends
    source: Path


class AlignmentError(ValueError):
    """Bad input, with the file and line in the message."""


def microseconds(text: str, source: Path, line: int) -> int:
    try:
        value = float(text)
    except ValueError as error:
        raise AlignmentError(f"{source}:{line}: expected a time in seconds, got {text!r}") from error
    if not math.isfinite(value) or value < 0:
        raise AlignmentError(f"{source}:{line}: times must be finite and >= 0, got {text!r}")
    return round(value * MICROSECONDS)


# ---------------------------------------------------------------------------------------------
# TextGrid

# Quoted strings ("" escapes a quote), item / interval indices in brackets (skipped), numbers,
# the <exists> flag, and any other word (keys such as "xmin =", skipped).
_TOKEN = re.compile(r'"((?:[^"]|"")*)"|(\[[^\]\n]*\])|(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)(?![^\s"])|(<exists>|<absent>)|[^\s"]+')


def _textgrid_tokens(text: str) -> list[tuple[str, int]]:
    """Values of a text TextGrid, long or short format (the same values in the same order)."""
    tokens = []
    line = 1
    position = 0
    for match in _TOKEN.finditer(text):
        line += text.count("\n", position, match.start())
        position = match.start()
        quoted, _, number, flag = match.groups()  # bracketed indices and other words are dropped
        if quoted is not None:
            tokens.append(('"' + quoted.replace('""', '"'), line))  # marked as a string
        elif number is not None or flag is not None:
            tokens.append((number or flag, line))
    return tokens


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")  # Praat's own files may be UTF-16
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise AlignmentError(f"{path}: not a UTF-8 or UTF-16 text TextGrid ({error})") from error


def read_textgrid(path: Path, tier: str = "phones") -> Alignment:
    """The intervals of ``tier`` (or ``<speaker> - <tier>``) of one TextGrid file."""
    tokens = _textgrid_tokens(_read_text(path))
    position = 0

    def take(kind: str) -> tuple[str, int]:
        nonlocal position
        if position >= len(tokens):
            raise AlignmentError(f"{path}: the file ends early (expected {kind}); is it a complete text TextGrid?")
        value, line = tokens[position]
        if (kind == "string") != value.startswith('"'):
            raise AlignmentError(f"{path}:{line}: expected {kind}, found {value.lstrip(chr(34))!r}")
        position += 1
        return (value[1:] if kind == "string" else value), line

    if take("string")[0] != "ooTextFile" or take("string")[0] != "TextGrid":
        raise AlignmentError(f"{path}: not a text TextGrid (File type 'ooTextFile', Object class 'TextGrid')")
    take("number"), take("number")  # the file's start and end
    if take("number")[0] != "<exists>":
        raise AlignmentError(f"{path}: the TextGrid has no tiers")
    names = []
    for _ in range(int(take("number")[0])):
        kind, name = take("string")[0], take("string")[0]
        take("number")  # the tier's start
        end_text, end_line = take("number")
        count = int(take("number")[0])
        names.append(name)
        if kind == "TextTier":
            for _ in range(count):
                take("number"), take("string")
            continue
        if kind != "IntervalTier":
            raise AlignmentError(f"{path}: unknown tier class {kind!r}")
        intervals = []
        for _ in range(count):
            (start, line), (end, _), (symbol, symbol_line) = take("number"), take("number"), take("string")
            intervals.append(Interval(microseconds(start, path, line), microseconds(end, path, line), symbol, path, symbol_line))
        if name == tier or name.endswith(f" - {tier}"):
            return Alignment(path.stem, intervals, microseconds(end_text, path, end_line), path)
    raise AlignmentError(f"{path}: no tier named {tier!r} (tiers: {names}); choose one with --tier")


# ---------------------------------------------------------------------------------------------
# CTM


def read_ctm(path: Path) -> list[Alignment]:
    """One alignment per utterance of a CTM file, in the order the utterances first appear."""
    alignments: dict[str, Alignment] = {}
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        fields = text.split()
        if not fields or text.startswith(";;"):
            continue
        if len(fields) not in (5, 6):
            expected = "'<utt_id> <channel> <start> <duration> <phone> [<confidence>]'"
            raise AlignmentError(f"{path}:{number}: expected {expected}, got {text!r}")
        utt_id, _, start, duration, symbol = fields[:5]
        begin = microseconds(start, path, number)
        interval = Interval(begin, begin + microseconds(duration, path, number), symbol, path, number)
        alignment = alignments.setdefault(utt_id, Alignment(utt_id, [], 0, path))
        alignment.intervals.append(interval)
        alignment.end = max(alignment.end, interval.end)
    return list(alignments.values())


def read_alignments(kind: str, inputs: Sequence[Path], tier: str = "phones") -> list[Alignment]:
    """Every alignment of the input files (folders: their TextGrids, recursively)."""
    if kind not in FORMATS:
        raise ValueError(f"unknown alignment format {kind!r}; expected one of {FORMATS}")
    alignments: list[Alignment] = []
    for path in map(Path, inputs):
        if not path.exists():
            raise FileNotFoundError(f"alignment input not found: {path}")
        if kind == "ctm":
            alignments += read_ctm(path)
            continue
        files = sorted(path.rglob("*.TextGrid")) if path.is_dir() else [path]
        if not files:
            raise FileNotFoundError(f"no .TextGrid files under {path}")
        alignments += [read_textgrid(file, tier) for file in files]
    first: dict[str, Path] = {}
    for alignment in alignments:
        if alignment.utt_id in first:
            raise AlignmentError(
                f"utterance {alignment.utt_id} is aligned twice: in {first[alignment.utt_id]} and {alignment.source}"
            )
        first[alignment.utt_id] = alignment.source
    return alignments


# ---------------------------------------------------------------------------------------------
# Symbols and frames


def fold(symbol: str) -> str:
    """``AH0`` -> ``ah``, ``AH1_B`` -> ``ah``: lower case, no stress digit, no word position."""
    symbol = re.sub(r"_[BIES]$", "", symbol.strip())
    return re.sub(r"(?<=[a-z])[0-2]$", "", symbol.lower())


class PhoneMapper:
    """Aligner symbols -> class indices of the phone list (see the module docstring)."""

    def __init__(self, phone_names: Sequence[str], silence: str = "sil", extra_map: Optional[dict[str, str]] = None):
        self.index = {name: i for i, name in enumerate(phone_names)}
        if silence not in self.index:
            raise ValueError(f"silence class {silence!r} is not in the phone list (--silence)")
        self.silence = self.index[silence]
        for source, target in (extra_map or {}).items():
            if target not in self.index:
                raise ValueError(f"--map {source}={target}: {target!r} is not in the phone list")
        self.map = {**ARPABET_MAP, **(extra_map or {})}
        self.mapped: Counter[tuple[str, str]] = Counter()  # (folded symbol, phone) pairs used

    def __call__(self, interval: Interval) -> int:
        symbol = fold(interval.symbol)
        if symbol in SILENCE_SYMBOLS:
            return self.silence
        if symbol in self.index:
            return self.index[symbol]
        target = self.map.get(symbol)
        if target in self.index:
            self.mapped[symbol, target] += 1
            return self.index[target]
        raise AlignmentError(
            f"{interval.source}:{interval.line}: phone {interval.symbol!r} (folded: {symbol!r}) is not in the "
            f"phone list and has no mapping; add one with --map {symbol}=PHONE"
        )


def num_frames(end_us: int) -> int:
    """10 ms frames of an utterance ending at ``end_us``: ceil(samples / 160)."""
    samples = (end_us * SAMPLE_RATE + MICROSECONDS // 2) // MICROSECONDS
    return -(-samples // LABEL_HOP)


def frame_labels(alignment: Alignment, frames: int, mapper: PhoneMapper) -> list[int]:
    """The class of the interval holding each frame centre 10t + 5 ms; silence where none does."""
    intervals = sorted(alignment.intervals, key=lambda i: (i.start, i.end))
    for index, (before, after) in enumerate(zip(intervals, intervals[1:])):
        if 0 < before.end - after.start < OVERLAP_TOLERANCE_US and before.start < after.start:
            intervals[index] = before = replace(before, end=after.start)  # rounding, not a real overlap
        if after.start < before.end:
            raise AlignmentError(
                f"{after.source}:{after.line}: utterance {alignment.utt_id}: the interval starting at "
                f"{after.start / MICROSECONDS:.6f} s overlaps the one ending at {before.end / MICROSECONDS:.6f} s"
            )
    classes = [mapper(interval) for interval in intervals]
    labels = []
    current = 0
    for t in range(frames):
        centre = FRAME_US * t + FRAME_US // 2
        while current < len(intervals) and intervals[current].end <= centre:
            current += 1
        inside = current < len(intervals) and intervals[current].start <= centre
        labels.append(classes[current] if inside else mapper.silence)
    return labels


def audio_lengths(folder: Path) -> dict[str, int]:
    """Utterance id (file stem) -> samples at 16 kHz, for every audio file under ``folder``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"audio folder not found: {folder} (--audio)")
    lengths = {}
    for path in files_under(folder):
        info = soundfile.info(str(path))
        lengths[path.stem] = resampled_length(info.frames, info.samplerate)
    return lengths


@dataclass
class Conversion:
    labels: dict[str, list[int]]  # utt_id -> class per 10 ms frame
    mismatched: list[str]  # "utt_id: ..." for each utterance whose alignment ends off its audio
    mapped: Counter


def convert(
    alignments: Iterable[Alignment],
    mapper: PhoneMapper,
    audio: Optional[dict[str, int]] = None,
) -> Conversion:
    """Frame labels of every alignment. With ``audio`` (utt_id -> samples), T comes from the
    audio, and alignments ending more than one frame away from it are listed in ``mismatched``
    (and left out)."""
    labels, mismatched = {}, []
    for alignment in alignments:
        frames = num_frames(alignment.end)
        if audio is not None:
            if alignment.utt_id not in audio:
                first = alignment.intervals[0] if alignment.intervals else None
                where = f"{first.source}:{first.line}" if first else str(alignment.source)
                raise FileNotFoundError(f"{where}: utterance {alignment.utt_id} has no audio file (--audio)")
            expected = math.ceil(audio[alignment.utt_id] / LABEL_HOP)
            if abs(frames - expected) > TOLERANCE:
                mismatched.append(
                    f"{alignment.utt_id}: the alignment ends at {alignment.end / MICROSECONDS:.3f} s "
                    f"({frames} frames), the audio at {audio[alignment.utt_id] / SAMPLE_RATE:.3f} s ({expected} frames)"
                )
                continue
            frames = expected
        labels[alignment.utt_id] = frame_labels(alignment, frames, mapper)
    return Conversion(labels, mismatched, mapper.mapped)


def write_frames(labels: dict[str, list[int]], path: Path) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"-o {path} is a folder; give the frames.txt file to write (e.g. {path / 'frames.txt'})")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{utt_id} {' '.join(map(str, labels[utt_id]))}\n" for utt_id in sorted(labels)))


# ---------------------------------------------------------------------------------------------
# Command line


def _parse_map(items: Sequence[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        source, sep, target = item.partition("=")
        if not sep or not source or not target:
            raise ValueError(f"--map {item!r}: expected FROM=TO, e.g. --map dx=t")
        pairs[fold(source)] = target
    return pairs


EXAMPLES = """\
    python -m corpora.alignments textgrid ALIGNED_DIR -o train-clean-100.frames.txt \\
        --phones phones.txt --audio LibriSpeech/train-clean-100
    python -m corpora.alignments ctm phones.ctm -o dev-clean.frames.txt --phones phones.txt
"""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m corpora.alignments",
        description="Convert forced alignments (MFA TextGrids or CTM) to 10 ms frames.txt labels.",
        epilog="examples:\n" + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("format", choices=FORMATS)
    parser.add_argument("inputs", nargs="+", type=Path, help="TextGrid files or folders, or CTM files")
    parser.add_argument("-o", "--output", type=Path, required=True, help="frames.txt to write")
    parser.add_argument("--phones", type=Path, required=True, help="class list, 'name index' per line")
    parser.add_argument("--audio", type=Path, help="folder of the utterances' audio: T from it, and end checks")
    parser.add_argument("--tier", default="phones", help="TextGrid tier (default: phones)")
    parser.add_argument("--silence", default="sil", help="class of silence, sp, spn and empty intervals")
    parser.add_argument("--map", action="append", default=[], metavar="FROM=TO", help="extra symbol mapping")
    parser.add_argument("--drop-mismatched", action="store_true", help="leave out utterances whose alignment ends off the audio")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Conversion:
    args = build_parser().parse_args(argv)
    check_output_is_not_an_input(args.output, [*args.inputs, args.phones], "-o")
    mapper = PhoneMapper(read_phone_names(args.phones), args.silence, _parse_map(args.map))
    audio = audio_lengths(args.audio) if args.audio is not None else None
    result = convert(read_alignments(args.format, args.inputs, args.tier), mapper, audio)
    if result.mismatched:
        report = "\n  ".join(result.mismatched)
        if not args.drop_mismatched:
            raise AlignmentError(
                f"{len(result.mismatched)} utterance(s) end more than one frame away from their audio "
                f"(wrong audio folder, or a failed alignment); nothing written. Leave them out with "
                f"--drop-mismatched:\n  {report}"
            )
        print(f"left out {len(result.mismatched)} utterance(s) ending off their audio:\n  {report}", file=sys.stderr)
    write_frames(result.labels, args.output)
    mapped = ", ".join(f"{source}->{target} ({count})" for (source, target), count in sorted(result.mapped.items()))
    print(f"wrote {len(result.labels)} utterance(s) to {args.output}" + (f"; mapped {mapped}" if mapped else ""), file=sys.stderr)
    return result


def run() -> None:
    """The command: a mistake in the input is one ``error:`` line (exit status 2)."""
    run_cli(main)


if __name__ == "__main__":
    run()

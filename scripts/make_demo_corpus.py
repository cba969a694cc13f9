"""Cut the small demo corpus shipped in data/demo out of a larger corpus of the same layout.

    python scripts/make_demo_corpus.py SOURCE_ROOT data/demo

SOURCE_ROOT is a LibriSpeech-layout corpus with ``alignments/<split>.frames.txt`` and
``.segments.txt``, ``phones.txt`` and ``SPEAKERS.TXT`` (as made by make_corpus.py).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

# split -> (speakers, utterances per chapter)
DEMO_SPLITS = {"train-clean-100": (10, 3), "dev-clean": (4, 3), "test-clean": (4, 3)}


def copy_subset(source: Path, target: Path) -> list[str]:
    """Copy the first speakers and utterances of each split; return the kept utterance ids."""
    kept = []
    for split, (num_speakers, per_chapter) in DEMO_SPLITS.items():
        speakers = sorted(p for p in (source / split).iterdir() if p.is_dir())[:num_speakers]
        for speaker in speakers:
            for chapter in sorted(p for p in speaker.iterdir() if p.is_dir()):
                out = target / split / speaker.name / chapter.name
                out.mkdir(parents=True, exist_ok=True)
                flacs = sorted(chapter.glob("*.flac"))[:per_chapter]
                ids = [flac.stem for flac in flacs]
                for flac in flacs:
                    shutil.copy2(flac, out / flac.name)
                transcript = chapter / f"{speaker.name}-{chapter.name}.trans.txt"
                lines = [line for line in transcript.read_text().splitlines() if line.split(" ", 1)[0] in ids]
                (out / transcript.name).write_text("\n".join(lines) + "\n")
                kept.extend(ids)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    kept = set(copy_subset(args.source, args.target))
    speakers = {utt.split("-")[0] for utt in kept}
    (args.target / "alignments").mkdir(parents=True, exist_ok=True)
    for split in DEMO_SPLITS:
        for kind in ("frames", "segments"):
            name = f"alignments/{split}.{kind}.txt"
            lines = (args.source / name).read_text().splitlines()
            (args.target / name).write_text("\n".join(line for line in lines if line.split(" ", 1)[0] in kept) + "\n")
    shutil.copy2(args.source / "phones.txt", args.target / "phones.txt")
    speaker_lines = (args.source / "SPEAKERS.TXT").read_text().splitlines()
    (args.target / "SPEAKERS.TXT").write_text(
        "\n".join(line for line in speaker_lines if line.startswith(";") or line.split("|")[0].strip() in speakers) + "\n"
    )
    print(f"{len(kept)} utterances of {len(speakers)} speakers written to {args.target}")


if __name__ == "__main__":
    main()

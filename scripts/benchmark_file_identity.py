"""What it costs to know that an audio file changed: the stat-only identity the feature cache
and the corpus index use (size, mtime, ctime, inode) against a SHA-256 of the file's bytes,
timed on a corpus and extrapolated to a 100-hour one.

    python scripts/benchmark_file_identity.py --root CORPUS [--hours 100] [--repeats 3]

The hash is timed with the files in the page cache (the best case: only the hashing itself);
a first read from disk adds the disk's read time on top. For comparison, the full decode the
corpus index already does once per new or changed file (``corpora.audio_check.inspect_audio``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import soundfile

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from utility.integrity import file_version  # noqa: E402
from corpora.audio_check import inspect_audio  # noqa: E402
from corpora.index import AUDIO_SUFFIXES  # noqa: E402

FLAC_MB_PER_HOUR = 75  # 16 kHz 16-bit mono FLAC, about (LibriSpeech: 6.3 GB for 100 h)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def timed(function, files: list[Path], repeats: int) -> float:
    """The fastest of ``repeats`` passes over ``files``, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for path in files:
            function(path)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="a corpus folder (searched for .flac/.wav)")
    parser.add_argument("--hours", type=float, default=100.0, help="corpus size to extrapolate to")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    files = sorted(p for p in Path(args.root).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise SystemExit(f"error: no audio files under {args.root}")
    size = sum(p.stat().st_size for p in files)
    hours = sum(soundfile.info(str(p)).duration for p in files) / 3600
    for path in files:  # into the page cache: what follows times the CPU work, not the disk
        sha256_of(path)
    stat_s = timed(file_version, files, args.repeats)
    hash_s = timed(sha256_of, files, args.repeats)
    decode_s = timed(inspect_audio, files, 1)
    scale_files = args.hours / hours
    target_bytes = args.hours * FLAC_MB_PER_HOUR * 1e6
    print(f"corpus: {len(files)} files, {size / 1e6:.1f} MB, {hours:.3f} h ({size / 1e6 / hours:.0f} MB/h); "
          f"cpu cores {os.cpu_count()}")
    print(f"stat identity (size, mtime, ctime, inode): {stat_s * 1e6 / len(files):.1f} us/file")
    print(f"sha256 of the bytes: {size / 1e6 / hash_s:.0f} MB/s ({hash_s / stat_s:.0f}x the stat pass)")
    print(f"full decode (the corpus index's inspect_audio): {size / 1e6 / decode_s:.0f} MB/s")
    print(
        f"{args.hours:g} h corpus ({len(files) * scale_files:.0f} files, "
        f"{target_bytes / 1e9:.1f} GB at {FLAC_MB_PER_HOUR} MB/h): "
        f"stat {stat_s * scale_files:.2f} s per start; sha256 {target_bytes / (size / hash_s):.0f} s per new or changed "
        f"corpus (page-cached; plus the disk read); the index's decode {target_bytes / (size / decode_s):.0f} s"
    )


if __name__ == "__main__":
    main()

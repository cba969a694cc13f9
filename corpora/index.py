"""LibriSpeech-layout corpora: ``ROOT/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.{flac,wav}``.

Speaker and chapter folders may be symbolic links (followed, loops walked once). An utterance
stored both as ``.flac`` and ``.wav`` is indexed once, as ``.flac``, with a warning naming the
``.wav`` left out.

Every file is read once and what was found (length, sample rate, channels, and any problem
that makes it unusable, see ``corpora.audio_check``) is cached in ``ROOT/.length_index.json``
(or, when the root is read-only, under ``~/.cache``), so a 100k-utterance corpus is not
re-read at each start. A cache entry is reused only while the file's version
(``utility.integrity.file_version``: size, mtime, ctime, inode) is the one it was read at.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Optional, Sequence

from tqdm import tqdm

from utility.atomic_write import write_text_atomic
from utility.integrity import file_version

from .audio_check import AudioScreen, active_screen, inspect_audio
from .utterance import Utterance

AUDIO_SUFFIXES = (".flac", ".wav")
INDEX_NAME = ".length_index.json"


def _cache_path(root: Path) -> Path:
    if os.access(root, os.W_OK):
        return root / INDEX_NAME
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "mam-corpus-index" / f"{digest}.json"


def _read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # no cache yet, or an unreadable one: it is rebuilt


def _write_cache(path: Path, entries: dict) -> None:
    try:
        write_text_atomic(path, json.dumps(entries))
    except OSError:
        pass  # a cache that cannot be written only costs time at the next start


def files_under(folder: Path, endings: Sequence[str] = AUDIO_SUFFIXES) -> list[Path]:
    """The files under ``folder`` whose name ends with one of ``endings`` (any case), sorted.
    Folders that are symbolic links (a speaker or chapter kept on another disk) are followed,
    as ``Path.rglob`` does not; a link back to a folder already walked (a loop) is not."""
    walked: set[str] = set()
    found = []
    for current, subfolders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in walked:
            subfolders.clear()
            continue
        walked.add(real)
        found.extend(Path(current) / name for name in names if name.lower().endswith(tuple(endings)))
    return sorted(found)


def _one_file_per_utterance(files: list[Path]) -> list[Path]:
    """One file per utterance: where the same utterance is stored in several formats
    (``X.flac`` and ``X.wav`` in one folder), the first of ``AUDIO_SUFFIXES`` (.flac,
    LibriSpeech's own) is indexed, with a warning naming the others; indexing both would count
    the utterance twice and put its copies on both sides of a speaker split."""
    kept: dict[Path, Path] = {}
    for path in sorted(files, key=lambda p: AUDIO_SUFFIXES.index(p.suffix.lower())):
        kept.setdefault(path.with_suffix(""), path)
    left_out = sorted(set(files) - set(kept.values()))
    if left_out:
        examples = ", ".join(f"{path} (beside {kept[path.with_suffix('')].name})" for path in left_out[:3])
        warnings.warn(
            f"{len(left_out)} utterance(s) stored in two formats: indexing {AUDIO_SUFFIXES[0]} before "
            f"{AUDIO_SUFFIXES[1]}, leaving out {examples}{' ...' if len(left_out) > 3 else ''}",
            stacklevel=3,
        )
    return sorted(kept.values())


def find_utterances(
    root: str | Path,
    subsets: Sequence[str],
    progress: bool = True,
    skip_unreadable: bool = False,
    screen: Optional[AudioScreen] = None,
) -> list[Utterance]:
    """All audio files of ``subsets`` under ``root``, sorted by id.

    Raises a clear error for a missing root, a missing subset, or a subset without audio.
    With a ``screen`` (or inside ``audio_check.screening``), unusable files are left out or
    stop the run as it says. Without one, only files whose header cannot be read raise, naming
    the file (with ``skip_unreadable`` they are left out with a warning naming each one), and
    the others come with their ``problem``.
    """
    screen = screen or active_screen()
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"corpus root not found: {root}")
    if isinstance(subsets, str):
        subsets = [subsets]
    if not subsets:
        raise ValueError(f"no subsets given for corpus {root}")
    files: list[tuple[str, Path]] = []
    for subset in subsets:
        folder = root / subset
        if not folder.is_dir():
            available = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            raise FileNotFoundError(f"subset {subset!r} not found under {root}; available: {available}")
        found = _one_file_per_utterance(files_under(folder))
        if not found:
            raise ValueError(f"subset {folder} has no .flac or .wav files")
        files.extend((subset, path) for path in found)

    cache_file = _cache_path(root)
    cache = _read_cache(cache_file)
    fresh = {}
    utterances = []
    for subset, path in tqdm(files, desc="indexing audio", disable=not progress or len(files) < 2000, leave=False):
        key = str(path.relative_to(root))
        version = list(file_version(path))
        entry = cache.get(key)
        # [file version, samples, rate, channels, problem]; older indexes keyed files by size and
        # mtime only (4 or 6 entries), which a same-size rewrite can keep: those are read again.
        if not entry or len(entry) != 5 or entry[0] != version:
            entry = [version, *inspect_audio(path)]
        fresh[key] = entry
        samples, rate, _, problem = entry[1:]
        if not rate and screen is None:  # an unreadable header
            if skip_unreadable:
                warnings.warn(f"skipping unreadable audio file {path}: {problem}", stacklevel=2)
                continue
            raise ValueError(f"cannot read audio header of {path}: {problem}")
        rel = path.relative_to(root / subset).parts
        speaker, chapter = (rel[0], rel[1]) if len(rel) >= 3 else (path.stem.split("-")[0], "")
        rate = int(rate) or 1  # 0: the header is unreadable, and the screen leaves the file out
        utterances.append(Utterance(path.stem, path, subset, speaker, chapter, int(samples), rate, problem))
    if fresh != {k: cache.get(k) for k in fresh}:
        cache.update(fresh)
        _write_cache(cache_file, cache)
    if screen is not None:
        utterances = screen.apply(utterances, f"{root} {list(subsets)}")
    return sorted(utterances, key=lambda u: u.utt_id)

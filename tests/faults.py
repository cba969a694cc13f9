"""Shared helpers of the fault tests: damaged files, bad audio, real command-line processes."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile
import torch

from conftest import REPO
from corpora.index import find_utterances
from corpora.root import DEMO_ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}


def overwrite_tensor_bytes(path: Path, data: bytes, key: Sequence[str], offset: int = 0) -> None:
    """Write ``data`` into the stored bytes of the tensor at ``key`` (e.g. ("upstream",
    "state_dict", "input_projection.weight")) of a torch.save zip file, in place: what a bad
    disk or a bad copy does, the zip structure stays valid."""
    tensor = torch.load(path, weights_only=True)
    for part in key:
        tensor = tensor[part]
    content = tensor.contiguous().view(torch.uint8).numpy().tobytes()
    with zipfile.ZipFile(path) as archive:
        record = next(i for i in archive.infolist() if "/data/" in i.filename and archive.read(i) == content)
    with open(path, "r+b") as stream:
        stream.seek(record.header_offset)
        header = stream.read(30)
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        stream.seek(record.header_offset + 30 + name_length + extra_length + offset)
        stream.write(data)


def copy_corpus(root: Path, subset: str = "train-clean-100", count: int = 0) -> Path:
    """A copy of the demo corpus's ``subset`` (the first ``count`` files, 0: all) under ``root``."""
    corpus = root / "corpus"
    utterances = find_utterances(DEMO_ROOT, [subset], progress=False)
    for utterance in utterances[: count or len(utterances)]:
        target = corpus / subset / utterance.speaker / utterance.chapter / utterance.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(utterance.path, target)
    return corpus


def mount_tiny_disk(path: Path, size: str = "256k") -> bool:
    """Mount a tmpfs of ``size`` at ``path`` (a new folder): a real disk that fills up. False
    where this process may not mount (then the caller fakes the full disk)."""
    path.mkdir()
    if shutil.which("mount") is None:
        return False
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return mounted.returncode == 0


def write_wav(path: Path, samples: np.ndarray, subtype: str = "FLOAT") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, 16000, subtype=subtype)
    return path


def non_finite_wav(path: Path, value: float = float("nan"), seconds: float = 2.0) -> Path:
    """Speech-like noise with one non-finite sample in the middle (a float wav)."""
    samples = np.random.default_rng(0).normal(0, 0.1, int(16000 * seconds)).astype(np.float32)
    samples[len(samples) // 2] = value
    return write_wav(path, samples)


def run_command(args: Sequence[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python ARGS`` in a real process, one thread, warnings off (so stderr holds the errors)."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def start(args: Sequence[str], cwd: Path) -> subprocess.Popen:
    """``python ARGS`` started in a real process (as run_command), not waited for."""
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(folder: Path, pattern: str, process: subprocess.Popen, timeout: float = 300) -> None:
    """Until a file matching ``pattern`` exists in ``folder``; fails if ``process`` ends first
    or it takes longer than ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (folder.is_dir() and any(folder.glob(pattern))):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"no {pattern} appeared in {folder}"
        time.sleep(0.1)


def interrupt_training(args: Sequence[str], folder: Path, cwd: Path, signum: int = signal.SIGINT) -> tuple[int, str]:
    """Run ``python ARGS``, press Ctrl-C (SIGINT; or send ``signum``) once a step checkpoint is in
    ``folder`` (it is training), and return the step it stopped at and its last line, checking
    exit status 128 + the signal (130 for Ctrl-C, 143 for SIGTERM)."""
    process = start(args, cwd)
    try:
        wait_for(folder, "states-*.ckpt", process)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signum, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    return int(last.split("interrupted at step ")[1].split(":")[0]), last


def error_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` that are errors (progress bars and notices aside)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_one_line_error(stderr: str, *expected: str) -> str:
    """stderr holds exactly one ``error: ...`` line, no traceback, and each of ``expected``."""
    assert "Traceback" not in stderr, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]

"""Damaged checkpoints are refused on load, naming the file; old files without a checksum load."""

from __future__ import annotations

import re
import shutil
import struct

import pytest
import torch

import hub
from conftest import FIXTURES, REPO, tiny_config
from faults import assert_one_line_error, overwrite_tensor_bytes, run_command
from upstream import Upstream, build_upstream, save_upstream
from upstream.checkpoint import upstream_checkpoint
from utility.checkpoint_file import read_checkpoint_file
from utility.checkpoint_keeper import CheckpointKeeper
from utility.integrity import DamagedCheckpoint

AUDIO = next((REPO / "data" / "demo" / "dev-clean").rglob("*.flac"))
WEIGHT = ("upstream", "state_dict", "input_projection.weight")


@pytest.fixture
def tiny_file(tmp_path):
    torch.manual_seed(0)
    return save_upstream(Upstream(tiny_config(num_layers=3)), tmp_path / "tiny.ckpt", "aalbert_3L")


def test_flipped_bytes_in_the_weights_are_refused_naming_the_file(tiny_file, tmp_path):
    build_upstream("aalbert_3L", tiny_file)  # intact: loads
    overwrite_tensor_bytes(tiny_file, b"\x5a\xa5\x5a\xa5", WEIGHT, offset=64)  # finite values, just wrong ones
    with pytest.raises(ValueError, match=rf"checkpoint {tiny_file} is damaged: its bytes no longer match"):
        build_upstream("aalbert_3L", tiny_file)
    with pytest.raises(ValueError, match="is damaged"):
        hub.from_checkpoint(str(tiny_file))
    done = run_command([str(REPO / "hub.py"), "aalbert_3L", "-k", str(tiny_file), str(AUDIO)], cwd=tmp_path)
    assert done.returncode == 2
    assert_one_line_error(done.stderr, str(tiny_file), "damaged")


def test_inf_written_into_an_old_file_without_checksum_is_refused(tmp_path):
    old = shutil.copy(FIXTURES / "legacy" / "pretrain" / "best.ckpt", tmp_path / "old.ckpt")
    assert "tensor_checksum" not in read_checkpoint_file(old)  # written before checksums: still loads
    overwrite_tensor_bytes(old, struct.pack("<2f", float("inf"), float("inf")), WEIGHT)  # 8 bytes of inf
    with pytest.raises(ValueError, match=r"old.ckpt holds 2 NaN/inf value\(s\) in upstream.state_dict.input_projection.weight"):
        build_upstream("aalbert_3L", old)
    done = run_command([str(REPO / "hub.py"), "aalbert_3L", str(AUDIO), "-k", str(old)], cwd=tmp_path)
    assert done.returncode == 2, done.stdout
    assert_one_line_error(done.stderr, "old.ckpt", "NaN/inf")


def flip_bit(path, position: int) -> bytes:
    """Flip the low bit of the byte at ``position`` of ``path``; returns the file's bytes before."""
    before = path.read_bytes()
    path.write_bytes(before[:position] + bytes([before[position] ^ 1]) + before[position + 1 :])
    return before


def test_a_flipped_bit_in_a_non_tensor_value_is_refused(tmp_path):
    keeper = CheckpointKeeper(tmp_path)
    keeper.save(upstream_checkpoint(Upstream(tiny_config(num_layers=3)), "aalbert_3L"), step=1, metric=0.123456789)
    path = tmp_path / "states-00000001.ckpt"
    assert read_checkpoint_file(path)["checkpoint_keeper"]["best_metric"] == 0.123456789
    at = path.read_bytes().index(struct.pack(">d", 0.123456789))  # pickle stores a float as 8 big-endian bytes
    flip_bit(path, at + 7)  # still a valid pickle, a number a little off
    with pytest.raises(DamagedCheckpoint, match=rf"checkpoint {path} is damaged: its bytes no longer match"):
        read_checkpoint_file(path)


def test_a_flipped_bit_anywhere_in_a_checkpoint_is_refused(tiny_file):
    size = tiny_file.stat().st_size
    positions = sorted({*range(0, size, max(1, size // 50)), *range(size - 120, size)})  # the end: zip directory and seal
    for position in positions:
        intact = flip_bit(tiny_file, position)
        with pytest.raises(ValueError, match=re.escape(str(tiny_file))):
            read_checkpoint_file(tiny_file)
        tiny_file.write_bytes(intact)
    assert torch.load(tiny_file, weights_only=True)["format"]  # a sealed file is a plain torch.save file
    read_checkpoint_file(tiny_file)

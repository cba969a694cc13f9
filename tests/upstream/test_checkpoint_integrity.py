"""Damaged checkpoints are refused on load, naming the file; old files without a checksum load."""

from __future__ import annotations

import shutil
import struct

import pytest
import torch

import hub
from conftest import FIXTURES, REPO, tiny_config
from faults import assert_one_line_error, overwrite_tensor_bytes, run_command
from upstream import Upstream, build_upstream, save_upstream
from utility.checkpoint_file import read_checkpoint_file

AUDIO = next((REPO / "data" / "demo" / "dev-clean").rglob("*.flac"))
WEIGHT = ("upstream", "state_dict", "input_projection.weight")


@pytest.fixture
def tiny_file(tmp_path):
    torch.manual_seed(0)
    return save_upstream(Upstream(tiny_config(num_layers=3)), tmp_path / "tiny.ckpt", "aalbert_3L")


def test_flipped_bytes_in_the_weights_are_refused_naming_the_file(tiny_file, tmp_path):
    build_upstream("aalbert_3L", tiny_file)  # intact: loads
    overwrite_tensor_bytes(tiny_file, b"\x5a\xa5\x5a\xa5", WEIGHT, offset=64)  # finite values, just wrong ones
    with pytest.raises(ValueError, match=rf"checkpoint {tiny_file} is damaged: .* checksum"):
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

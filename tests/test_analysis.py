"""Analysis commands on the demo data with a tiny model: the files they promise, with the content claimed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from conftest import tiny_config
from upstream import Upstream, save_upstream
from utility.analysis import attention_map, tsne
from utility.corpus import DEMO_ROOT


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_aalbert_3L.ckpt"
    return save_upstream(Upstream(tiny_config(num_layers=3)), path, name="aalbert_3L")


def test_attention_map_png(tmp_path, tiny_checkpoint):
    audio = next(DEMO_ROOT.glob("dev-clean/*/*/*.flac"))
    out = attention_map.main(
        ["-u", "aalbert_3L", "-k", str(tiny_checkpoint), "--audio", str(audio), "--layer", "3", "--head", "1", "-o", str(tmp_path / "a.png")]
    )
    image = imread(out)
    assert image.shape[:2] == (900, 800)
    assert image[..., :3].std() > 0.05  # a picture, not a blank canvas
    with pytest.raises(SystemExit):
        attention_map.main(["-u", "aalbert_3L", "-k", str(tiny_checkpoint), "--audio", str(audio), "--layer", "4"])


def test_attention_map_rows_sum_to_one(tiny_checkpoint):
    from upstream import build_upstream, read_audio

    model = build_upstream("aalbert_3L", tiny_checkpoint)
    wav = read_audio(next(DEMO_ROOT.glob("dev-clean/*/*/*.flac")))
    weights = attention_map.attention_map(model, wav, layer=2, head=None)
    assert weights.shape[0] == weights.shape[1] == (wav.numel() // 160 + 1) // 3
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[0]), atol=1e-5)
    with pytest.raises(ValueError, match=r"head must be in \[0, 3\]"):
        attention_map.attention_map(model, wav, layer=2, head=4)


def test_speaker_tsne_png_is_deterministic(tmp_path, tiny_checkpoint):
    first = tsne.main(["-u", "aalbert_3L", "-k", str(tiny_checkpoint), "--layer", "2", "-o", str(tmp_path / "t1.png")])
    second = tsne.main(["-u", "aalbert_3L", "-k", str(tiny_checkpoint), "--layer", "2", "-o", str(tmp_path / "t2.png")])
    image = imread(first)
    assert image.shape[:2] == (700, 800)
    assert np.array_equal(image, imread(second)), "same seed, same picture"

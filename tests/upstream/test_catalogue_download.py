"""Published checkpoints by name: the catalogue, the download into torch.hub's cache (from a
loopback server standing in for the real hosts, through MAM_CHECKPOINT_MIRROR), offline mode,
broken transfers and broken cached files. No test touches the network."""

from __future__ import annotations

import argparse
import http.server
import threading
import urllib.parse
import warnings
from pathlib import Path

import pytest
import torch

import hub
from conftest import FIXTURES, REPO
from upstream import build_upstream, entry_names
from upstream.catalogue import CATALOGUE, find_published, published_for
from upstream.download import CheckpointDownloadError, cache_path, mirrored_url
from upstream.s3prl.read import read_s3prl_file

AALBERT = find_published("audio_albert")


def three_layer_s3prl_file(path: Path) -> Path:
    """The 2-layer shared-layer s3prl fixture grown to 3 layers (the depth of the published
    AALBERT), still in s3prl's 0.4 layout with a pickled argparse.Namespace."""
    data = read_s3prl_file(FIXTURES / "s3prl" / "v04_kaldi_fbank_aalbert.ckpt")
    transformer = dict(data["Transformer"])
    transformer.update(
        {
            key.replace("encoder.layer.0.", "encoder.layer.2."): tensor
            for key, tensor in transformer.items()
            if key.startswith("encoder.layer.0.")
        }
    )
    config = data["Upstream_Config"]
    config["transformer"]["num_hidden_layers"] = 3
    payload = {
        "Transformer": transformer,
        "Step": data["Step"],
        "Args": argparse.Namespace(**data["Args"].pickled_state),
        "Config": data["Config"],
        "Upstream_Config": config,
    }
    torch.save(payload, path)
    return path


class Server:
    """A loopback HTTP server in a thread: serves one file for any path, records the paths
    asked for, and can break off halfway through a transfer."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.requests: list[str] = []
        self.break_off = False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.payload)))
                self.end_headers()
                if server.break_off:
                    self.wfile.write(server.payload[: len(server.payload) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(server.payload)

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def hub_dir(tmp_path):
    """torch.hub's cache folder redirected into tmp_path for the test."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


@pytest.fixture
def served_file(tmp_path) -> Path:
    return three_layer_s3prl_file(tmp_path / "served.ckpt")


@pytest.fixture
def mirror(served_file, hub_dir, monkeypatch):
    monkeypatch.delenv("MAM_OFFLINE", raising=False)
    with Server(served_file.read_bytes()) as server:
        monkeypatch.setenv("MAM_CHECKPOINT_MIRROR", server.url)
        yield server


def first_states(model, wav: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        return model([wav])["hidden_states"]


def test_catalogue_names_every_published_file_and_its_entry():
    names = [name for checkpoint in CATALOGUE for name in checkpoint.names]
    assert len(names) == len(set(names)) == 12  # 6 files, 6 aliases (s3prl 0.4.18's hubconf files)
    assert {checkpoint.entry for checkpoint in CATALOGUE} <= set(entry_names())
    assert find_published("mockingjay").name == "mockingjay_logMelLinearLarge_T_AdamW_b32_500k_360hr_drop1"
    assert find_published("mockingjay_origin").entry == "mockingjay_12L"
    assert find_published("mockingjay_960hr").name == "mockingjay_logMelBase_T_AdamW_b32_1m_960hr_drop1"
    assert find_published("mockingjay_100hr").steps == 200_000
    assert AALBERT.name == "audio_albert_logMelBase_T_share_AdamW_b32_1m_960hr_drop1" and AALBERT.entry == "aalbert_3L"
    assert len(published_for("mockingjay_3L")) == 4 and published_for("aalbert_6L") == []
    assert all(checkpoint.url.startswith("https://") for checkpoint in CATALOGUE)
    assert find_published(True, "aalbert_3L") is AALBERT  # the one that fits


@pytest.mark.parametrize(
    "name, pretrained, message",
    [
        ("mockingjay_3L", "audio_albert", "3-layer AALBERT model: load it with 'aalbert_3L', not 'mockingjay_3L'"),
        ("mockingjay_3L", "mockingjay", "12-layer Mockingjay model: load it with 'mockingjay_12L', not 'mockingjay_3L'"),
        ("fbank", "mockingjay_960hr", "load it with 'mockingjay_3L', not 'fbank'"),
        ("mockingjay_3L", True, "4 published checkpoints fit 'mockingjay_3L'; choose one with pretrained=NAME: mockingjay_100hr"),
        ("aalbert_6L", True, "no published checkpoint fits 'aalbert_6L'"),
        ("aalbert_3L", "tera", "unknown published checkpoint 'tera'; known names: audio_albert"),
    ],
)
def test_asking_for_a_checkpoint_that_does_not_fit_names_the_right_entry(name, pretrained, message, hub_dir):
    with pytest.raises(ValueError, match=message):
        build_upstream(name, pretrained=pretrained)
    assert not hub_dir.exists(), "nothing may be fetched for a request that cannot fit"


def test_random_weights_warning_names_the_published_checkpoints_that_fit():
    with pytest.warns(UserWarning, match="RANDOM.*pretrained=NAME for a published one that fits: 'mockingjay_100hr'"):
        build_upstream("mockingjay_3L")
    with pytest.warns(UserWarning, match="no published checkpoint fits 'mockingjay_6L'"):
        build_upstream("mockingjay_6L")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_upstream("aalbert_3L", pretrained=False)  # asked for random weights: no warning


def test_first_load_downloads_once_and_equals_the_file_loaded_directly(mirror, served_file, hub_dir, demo_wavs):
    model = build_upstream("aalbert_3L", pretrained="audio_albert")
    original = urllib.parse.urlsplit(AALBERT.url)
    assert mirror.requests == [original.path]  # the mirror kept the catalogue URL's path
    cached = cache_path(AALBERT)
    assert cached == hub_dir / "checkpoints" / f"{AALBERT.name}.ckpt"
    assert [path.name for path in cached.parent.iterdir()] == [cached.name], "no temporary file may be left behind"
    assert cached.read_bytes() == served_file.read_bytes()
    direct = build_upstream("aalbert_3L", served_file)
    for a, b in zip(first_states(model, demo_wavs[0]), first_states(direct, demo_wavs[0])):
        assert torch.equal(a, b)

    # Later loads, by any of its names and through torch.hub, read the cache without a request.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a published checkpoint is not random: no warning
        again = torch.hub.load(str(REPO), "aalbert_3L", source="local", pretrained="audio_albert_960hr")
    assert len(mirror.requests) == 1
    assert torch.equal(first_states(again, demo_wavs[0])[-1], first_states(direct, demo_wavs[0])[-1])
    build_upstream(None, pretrained=AALBERT.name)  # the catalogue knows the entry
    bundled = find_published("audio_albert_960hr").get_model()  # the bundle, as torchaudio's get_model()
    assert not bundled.training and torch.equal(first_states(bundled, demo_wavs[0])[-1], first_states(direct, demo_wavs[0])[-1])
    assert len(mirror.requests) == 1
    build_upstream("aalbert_3L", pretrained="audio_albert", refresh=True)
    assert len(mirror.requests) == 2


def test_a_transfer_that_breaks_off_leaves_no_file_in_the_cache(mirror, hub_dir):
    mirror.break_off = True
    with pytest.raises(CheckpointDownloadError, match="downloading it failed"):
        build_upstream("aalbert_3L", pretrained="audio_albert")
    assert len(mirror.requests) == 1
    assert list((hub_dir / "checkpoints").iterdir()) == []


def test_offline_mode_names_the_url_the_cache_path_and_ckpt(hub_dir, monkeypatch):
    monkeypatch.delenv("MAM_CHECKPOINT_MIRROR", raising=False)
    monkeypatch.setenv("MAM_OFFLINE", "1")
    with pytest.raises(CheckpointDownloadError) as error:
        hub.aalbert_3L(pretrained="audio_albert")
    message = str(error.value)
    assert "network access is off (MAM_OFFLINE=1)" in message
    assert AALBERT.url in message and str(cache_path(AALBERT)) in message and "ckpt=PATH" in message


def test_offline_mode_still_loads_a_cached_file(served_file, hub_dir, monkeypatch):
    monkeypatch.setenv("MAM_OFFLINE", "1")
    cache_path(AALBERT).parent.mkdir(parents=True)
    cache_path(AALBERT).write_bytes(served_file.read_bytes())
    assert build_upstream("aalbert_3L", pretrained="audio_albert").num_hidden_states == 4


def test_a_cached_file_that_does_not_load_names_its_path_and_refresh(mirror, hub_dir):
    path = cache_path(AALBERT)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match=f"does not load: {path} .*refresh=True"):
        build_upstream("aalbert_3L", pretrained="audio_albert")
    assert mirror.requests == []
    assert build_upstream("aalbert_3L", pretrained="audio_albert", refresh=True).num_hidden_states == 4
    assert len(mirror.requests) == 1


def test_mirror_replaces_scheme_and_host_and_keeps_path_and_query(monkeypatch):
    url = "https://www.dropbox.com/s/7f9z6dzc7oix6qv/states-1000000.ckpt?dl=1"
    monkeypatch.setenv("MAM_CHECKPOINT_MIRROR", "http://10.0.0.1:8080")
    assert mirrored_url(url) == "http://10.0.0.1:8080/s/7f9z6dzc7oix6qv/states-1000000.ckpt?dl=1"
    monkeypatch.setenv("MAM_CHECKPOINT_MIRROR", "http://mirror.lan/s3prl/")
    assert mirrored_url(url) == "http://mirror.lan/s3prl/s/7f9z6dzc7oix6qv/states-1000000.ckpt?dl=1"
    monkeypatch.setenv("MAM_CHECKPOINT_MIRROR", "mirror.lan")
    with pytest.raises(ValueError, match="is not a URL"):
        mirrored_url(url)


def test_hub_lists_the_catalogue(capsys):
    hub._main(["--pretrained"])
    listing = capsys.readouterr().out
    for checkpoint in CATALOGUE:
        assert checkpoint.name in listing and checkpoint.url in listing
    assert "mockingjay_logMelBase_T_AdamW_b32_1m_960hr_drop1 (mockingjay_960hr)" in listing

"""Upstreams: waveform -> hidden states of every layer (Mockingjay, AALBERT, plain features)."""

from .audio import read_audio
from .config import EncoderConfig, FrontendConfig, UpstreamConfig
from .checkpoint import save_upstream, upstream_checkpoint
from .files import read_upstream_checkpoint
from .loading import build_upstream
from .model import Upstream
from .registry import UpstreamEntry, entry_names, get_entry, register

__all__ = [
    "EncoderConfig",
    "FrontendConfig",
    "Upstream",
    "UpstreamConfig",
    "UpstreamEntry",
    "build_upstream",
    "entry_names",
    "get_entry",
    "read_audio",
    "read_upstream_checkpoint",
    "register",
    "save_upstream",
    "upstream_checkpoint",
]

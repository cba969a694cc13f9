"""Shared fixtures: tiny model configurations and demo-corpus audio."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from upstream import EncoderConfig, FrontendConfig, Upstream, UpstreamConfig, read_audio
from corpora.index import find_utterances
from corpora.root import DEMO_ROOT
from upstream.model import INTERFACE
from utility import process_defaults

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"


def flushes_subnormals() -> bool:
    """Whether the CPU now flushes subnormal floats to zero (the commands turn it on)."""
    return (torch.tensor([1e-39]) * 1.0).item() == 0.0


@pytest.fixture(autouse=True)
def process_settings_restored():
    """Tests run commands in this process, and a command sets the thread count and flush-to-zero
    and opts the process in to the tasks' thread choices (utility/process_defaults.py): each
    test starts from the settings pytest began with, whatever the test before it ran."""
    threads, flushing, opted_in = torch.get_num_threads(), flushes_subnormals(), process_defaults._process_threads
    yield
    torch.set_num_threads(threads)
    torch.set_flush_denormal(flushing)
    process_defaults._process_threads = opted_in


# float32's machine epsilon (2**-23): the spacing of float32 numbers just above 1.
FLOAT32_EPS = torch.finfo(torch.float32).eps


def cross_cpu_tolerance(reference: torch.Tensor, terms: int) -> float:
    """Absolute tolerance for float32 values compared with a reference computed on another CPU.

    MKL, oneDNN and ATen pick their kernels by instruction set (AVX2, AVX-512, AMX), and each
    blocks and orders its sums differently, so one float32 computation rounds differently from
    one CPU to another (measured: 2.5e-5 on hidden states of scale 3.3 between an Intel Xeon with
    MKL's AVX-512 paths and the AMD EPYC that wrote the reference). Whatever the order, a float32
    sum of ``terms`` products lies within (terms - 1) * eps * sum|products| of the exact value
    (the bound for recursive summation), so two orders differ by at most twice that. The values'
    largest magnitude stands in for the sum of magnitudes (every compared quantity here comes out
    of a normalisation that keeps it at that scale); ``terms`` is the longest reduction on the way
    to the values. A wrong or missing weight moves the values by a sizeable fraction of their scale,
    orders of magnitude above this (the tests that use it check that too).
    """
    return 2 * terms * FLOAT32_EPS * float(reference.abs().max())


def tiny_config(family: str = "aalbert", num_layers: int = 2, **encoder_fields) -> UpstreamConfig:
    """The papers' front end with a 32-wide, 2-layer encoder: real code paths, test speed."""
    fields = dict(
        input_dim=160,
        downsample_rate=3,
        hidden_size=32,
        num_layers=num_layers,
        num_heads=4,
        intermediate_size=64,
        share_layer=family == "aalbert",
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    fields.update(encoder_fields)
    return UpstreamConfig(family=family, frontend=FrontendConfig(), encoder=EncoderConfig(**fields))


# run_pretrain.py settings of the tiny encoder (and small batches) on the demo corpus.
TINY = [
    "model.encoder.hidden_size=32",
    "model.encoder.num_heads=4",
    "model.encoder.intermediate_size=64",
    "data.batch_size=4",
    "data.num_workers=0",
    "corpus.dev_utterances=4",
    "runner.log_step=1",
    "runner.image_step=0",
]


def overrides(*extra: str) -> list[str]:
    """``-o`` arguments of run_pretrain.py: TINY, then ``extra``."""
    return [arg for item in [*TINY, *extra] for arg in ("-o", item)]


@pytest.fixture
def tiny_upstream() -> Upstream:
    torch.manual_seed(0)
    return Upstream(tiny_config()).eval()


@pytest.fixture(scope="session")
def demo_wavs() -> list[torch.Tensor]:
    """Three demo utterances of different lengths."""
    utterances = find_utterances(DEMO_ROOT, ["dev-clean"], progress=False)[:3]
    return [read_audio(utt.path) for utt in utterances]


class CountingUpstream(torch.nn.Module):
    """An upstream that counts the waveforms it encodes; ``after_batch`` runs after each call."""

    def __init__(self, upstream: Upstream, after_batch=None):
        super().__init__()
        self.upstream = upstream
        self.encoded = 0
        self.after_batch = after_batch

    def __getattr__(self, name):
        if name in INTERFACE:
            return getattr(self.upstream, name)
        return super().__getattr__(name)

    def forward(self, wavs):
        self.encoded += len(wavs)
        output = self.upstream(wavs)
        if self.after_batch is not None:
            self.after_batch()
        return output

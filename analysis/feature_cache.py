"""An upstream that computes each waveform's hidden states once and then serves them from memory.

Layer-wise probing trains one probe per hidden state, each for many epochs over the same
utterances; with this wrapper the upstream runs once per distinct waveform for all of them.
It honours the :class:`upstream.Upstream` contract (same outputs, same properties), so the
downstream runner uses it unchanged. Waveforms are recognised by a hash of their samples, so
any dataset, order or batch composition hits the cache. The upstream must stay frozen:
fine-tuning would change the states the cache holds.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from upstream import Upstream
from upstream.model import INTERFACE


def waveform_key(wav: torch.Tensor) -> str:
    """A digest of the samples (and their dtype): equal waveforms, equal keys."""
    data = wav.detach().cpu().contiguous()
    return hashlib.sha1(str(data.dtype).encode() + data.numpy().tobytes()).hexdigest()


class CachedUpstream(nn.Module):
    """``upstream`` with its outputs memoised per waveform (kept in memory, float32).

    Memory: utterance frames x hidden size x num_hidden_states x 4 bytes (about 1.4 GB for an
    hour of audio through a 3-layer, 768-wide model at 30 ms frames).
    """

    def __init__(self, upstream: Upstream):
        super().__init__()
        self.upstream = upstream.eval()
        self.upstream.requires_grad_(False)
        self.store: dict[str, tuple[torch.Tensor, ...]] = {}
        self.computed = 0  # utterances the wrapped upstream actually ran on

    def __getattr__(self, name: str):
        # The upstream interface (upstream.model.INTERFACE) is the wrapped model's.
        if name in INTERFACE:
            return getattr(self.upstream, name)
        return super().__getattr__(name)

    def requires_grad_(self, requires_grad: bool = True) -> "CachedUpstream":
        if requires_grad:
            raise ValueError("cached hidden states need a frozen upstream; fine-tune with the plain upstream instead")
        return super().requires_grad_(False)

    def train(self, mode: bool = True) -> "CachedUpstream":
        # Cached states were computed without dropout; the wrapped model stays in eval mode.
        super().train(mode)
        self.upstream.eval()
        return self

    def forward(self, wavs: Sequence[torch.Tensor]) -> dict[str, object]:
        """Same as ``Upstream.forward``: hidden states (B, S, H) each, zero past ``lengths`` (B,)."""
        keys = [waveform_key(wav) for wav in wavs]
        missing: dict[str, torch.Tensor] = {}
        for key, wav in zip(keys, wavs):
            if key not in self.store:
                missing.setdefault(key, wav)
        if missing:
            # The upstream gives each item the same values (up to float rounding) alone as in
            # any batch, so the items of one batch can be cached one by one.
            with torch.inference_mode():
                output = self.upstream(list(missing.values()))
            for row, key in enumerate(missing):
                length = int(output["lengths"][row])
                self.store[key] = tuple(state[row, :length].clone() for state in output["hidden_states"])
            self.computed += len(missing)
        entries = [self.store[key] for key in keys]
        states = tuple(
            pad_sequence([entry[index] for entry in entries], batch_first=True)
            for index in range(self.num_hidden_states)
        )
        lengths = torch.tensor([entry[0].shape[0] for entry in entries], device=states[0].device)
        return {"hidden_states": states, "last_hidden_state": states[-1], "lengths": lengths}

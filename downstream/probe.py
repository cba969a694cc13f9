"""Upstream -> featurizer -> expert, as one module (the unit DDP wraps)."""

from __future__ import annotations

import torch
from torch import nn

from upstream import Upstream

from .base import Batch, Expert, StepOutput
from .feature_cache import padded_states
from .featurizer import Featurizer


class ProbeModel(nn.Module):
    """Runs the upstream frozen under ``torch.inference_mode`` (or trainable with
    ``fine_tune``), mixes its hidden states and hands them to the expert."""

    def __init__(self, upstream: Upstream, featurizer: Featurizer, expert: Expert, fine_tune: bool):
        super().__init__()
        self.upstream = upstream
        self.featurizer = featurizer
        self.expert = expert
        self.fine_tune = fine_tune
        self.upstream.requires_grad_(fine_tune)

    def train(self, mode: bool = True) -> "ProbeModel":
        super().train(mode)
        # A frozen upstream always runs as at inference (no dropout).
        self.upstream.train(mode and self.fine_tune)
        return self

    def features(self, wavs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms -> (B, S, H) featurizer output and (B,) frame counts."""
        device = self.device
        wavs = [wav.to(device) for wav in wavs]
        if self.fine_tune:
            output = self.upstream(wavs)
            states, lengths = output["hidden_states"], output["lengths"]
        else:
            with torch.inference_mode():
                output = self.upstream(wavs)
            # Tensors made under inference_mode cannot enter autograd (the featurizer's weights
            # need it): clone them into ordinary tensors.
            states = [state.clone() for state in output["hidden_states"]]
            lengths = output["lengths"].clone()
        return self.featurizer(states), lengths

    @property
    def device(self) -> torch.device:
        return self.upstream.device

    def forward(self, batch: Batch) -> StepOutput:
        if batch.states is not None:  # hidden states from the feature cache
            states, lengths = padded_states(batch.states, self.device)
            return self.expert(self.featurizer(states), lengths, batch)
        features, lengths = self.features(batch.wavs)
        return self.expert(features, lengths, batch)

    def trainable_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """The weights a probe checkpoint keeps: featurizer, expert, and the upstream's encoder
        when it is fine-tuned (a frozen one is rebuilt from its own checkpoint)."""
        state = {"featurizer": self.featurizer.state_dict(), "expert": self.expert.state_dict()}
        if self.fine_tune and self.upstream.encoder is not None:
            state["upstream"] = self.upstream.encoder.state_dict()
        return state

    def load_trainable_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        self.featurizer.load_state_dict(state["featurizer"])
        self.expert.load_state_dict(state["expert"])
        if "upstream" in state:
            self.upstream.encoder.load_state_dict(state["upstream"])

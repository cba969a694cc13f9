"""Pictures for TensorBoard: what the model saw, what it had to guess, and what it guessed."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on training machines

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def reconstruction_figure(
    clean: torch.Tensor, masked: torch.Tensor, prediction: torch.Tensor, target: torch.Tensor, downsample_rate: int
) -> Figure:
    """Four panels for one utterance.

    Args:
        clean, masked: (T, D) model input before and after masking.
        prediction: (S, Dt * R) head output; unstacked here to (S * R, Dt).
        target: (T, Dt) reconstruction target.
    """
    frames = prediction.shape[0] * downsample_rate
    unstacked = prediction.float().reshape(frames, -1)
    panels = [
        ("input", clean[:frames]),
        ("masked input", masked[:frames]),
        ("prediction", unstacked),
        ("target", target[:frames]),
    ]
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 9), sharex=True)
    for axis, (title, values) in zip(axes, panels):
        image = axis.imshow(values.detach().float().cpu().T.numpy(), origin="lower", aspect="auto", interpolation="none")
        axis.set_title(title)
        figure.colorbar(image, ax=axis)
    axes[-1].set_xlabel("frame (10 ms)")
    figure.tight_layout()
    return figure

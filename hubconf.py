"""torch.hub looks for this file name; the entries live in hub.py."""

dependencies = ["torch", "torchaudio", "soundfile", "yaml"]

from hub import *  # noqa: E402,F401,F403

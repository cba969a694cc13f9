"""The warning for an upstream built without trained weights."""

from __future__ import annotations


class RandomWeightsWarning(UserWarning):
    """An upstream was built with random weights. The message gives the Python remedy
    (``ckpt=PATH``, ``pretrained=...``); ``command_line`` the same in command-line terms
    (``-k PATH``), which the commands print instead (``utility.cli.run_cli``)."""

    def __init__(self, message: str, command_line: str):
        super().__init__(message)
        self.command_line = command_line


COMMAND_LINE_REMEDY = (
    "give -k PATH for a trained model (python hub.py --pretrained lists the published checkpoints and their URLs)"
)


def random_weights_warning(name: str, python_remedy: str, command_line_remedy: str = COMMAND_LINE_REMEDY) -> RandomWeightsWarning:
    start = f"{name}: no checkpoint given, so the weights are RANDOM; "
    return RandomWeightsWarning(start + python_remedy, start + command_line_remedy)

"""How s3prl's Mockingjay / AALBERT ``Transformer`` state dict names what our encoder names:
the one table both directions use (``read`` imports s3prl files, ``export`` writes them)."""

from __future__ import annotations

import re

# s3prl layer key (after "encoder.layer.<i>.") -> our layer key. q/k/v are fused into qkv.
LAYER_KEYS = {
    "attention.self.query": "qkv",  # rows 0:H of our fused projection
    "attention.self.key": "qkv",  # rows H:2H
    "attention.self.value": "qkv",  # rows 2H:3H
    "attention.output.dense": "attention_output",
    "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "ffn_in",
    "output.dense": "ffn_out",
    "output.LayerNorm": "ffn_norm",
}
# Pre-LN s3prl layers register the two LayerNorms a second time under these names
# (the same tensors); they carry nothing new, but must agree with what they alias.
LAYER_ALIASES = {"attention.LayerNorm": "attention.output.LayerNorm", "LayerNorm": "output.LayerNorm"}
# Keys outside the layers. Pre-LN files also hold one output LayerNorm per hidden state,
# "encoder.LayerNorm.<i>" -> our "output_norms.<i>" (i = 0 .. N).
TOP_KEYS = {
    "input_representations.spec_transform": "input_projection",
    "input_representations.LayerNorm": "input_norm",
}
QKV_ORDER = ("attention.self.query", "attention.self.key", "attention.self.value")
PARAMS = ("weight", "bias")
# The early shared-layer branch: "encoder.layer.attention...", no index.
UNINDEXED_LAYER = re.compile(r"^encoder\.layer\.[^\d]")


def rename_gamma_beta(key: str) -> str:
    """Old files name LayerNorm parameters gamma/beta."""
    return re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", key))

"""Check ``upstream.s3prl.export`` against s3prl 0.4.18 itself.

A development tool: it needs s3prl 0.4.18, which this project never depends on, so run it
from a scratch environment outside the repository::

    python -m venv --system-site-packages /tmp/s3prl-venv
    /tmp/s3prl-venv/bin/pip install --no-deps s3prl==0.4.18
    /tmp/s3prl-venv/bin/python scripts/s3prl_export_check.py [--full-size]

For each exportable layout (post-LN Mockingjay on s3prl's log-mel with a linear-spectrogram
head, shared-layer AALBERT, pre-LN Mockingjay, Kaldi fbank + delta AALBERT, chunked inputs) it
builds a model with random, perturbed weights (no LayerNorm at 1 / 0, no zero bias), saves it
as our checkpoint with a pretraining head, exports it, loads the file with s3prl's
``mockingjay_local`` / ``audio_albert_local`` (and its ``SpecHead`` into s3prl's head class,
strictly), checks that s3prl's model received every weight, and prints the largest
|ours - s3prl| of every hidden state over demo utterances, each alone and as one batch of
equal-length pieces. ``--full-size`` uses 768-hidden, 12-head 3- and 12-layer models.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3prl_parity import max_deviation, timing_batch  # noqa: E402  (also puts the repository on sys.path)

from upstream import EncoderConfig, FrontendConfig, Upstream, UpstreamConfig, build_upstream, read_audio  # noqa: E402
from upstream.s3prl.export import export_s3prl  # noqa: E402
from upstream.checkpoint import upstream_checkpoint  # noqa: E402
from utility.checkpoint_file import save_atomic  # noqa: E402
from corpora.index import find_utterances  # noqa: E402
from corpora.root import DEMO_ROOT  # noqa: E402

S3PRL_LOG_MEL = dict(feature="logmel", n_mels=80, delta_order=0, cmvn=True, target_level_db=-25.0, target="linear")
KALDI_FBANK = dict(
    feature="kaldi_fbank", delta_order=1, cmvn=True,
    kaldi_options={"num_mel_bins": 40, "frame_length": 25.0, "frame_shift": 10.0, "use_log_fbank": True},
)


@dataclass(frozen=True)
class Layout:
    name: str
    family: str
    frontend: dict
    encoder: dict = field(default_factory=dict)


LAYOUTS = (
    Layout("mockingjay_logmel_linear_head", "mockingjay", S3PRL_LOG_MEL),
    Layout("aalbert_logmel_mel_head", "aalbert", dict(S3PRL_LOG_MEL, target="mel")),
    Layout("mockingjay_pre_layer_norm", "mockingjay", S3PRL_LOG_MEL, {"pre_layer_norm": True}),
    Layout("aalbert_kaldi_fbank_delta", "aalbert", KALDI_FBANK),
    Layout("mockingjay_logmel_delta_chunked", "mockingjay", dict(S3PRL_LOG_MEL, delta_order=1), {"max_frames": 100}),
)


def build(layout: Layout, hidden: int, layers: int, heads: int, ffn: int, seed: int) -> Upstream:
    frontend = FrontendConfig(**layout.frontend)
    encoder = EncoderConfig(
        input_dim=frontend.feature_dim, downsample_rate=1, hidden_size=hidden, num_layers=layers, num_heads=heads,
        intermediate_size=ffn, share_layer=layout.family == "aalbert", **layout.encoder,
    )
    torch.manual_seed(seed)
    model = Upstream(UpstreamConfig(layout.family, frontend, encoder)).eval()
    with torch.no_grad():  # matrices at unit gain; LayerNorm scales off 1, biases off 0
        for param in model.encoder.parameters():
            param.normal_(0.0, param.shape[1] ** -0.5) if param.dim() == 2 else param.add_(0.2 * torch.randn_like(param))
    return model


def save_with_head(model: Upstream, path: Path) -> None:
    hidden, target = model.hidden_size, model.config.frontend.target_dim
    payload = upstream_checkpoint(model, f"{model.config.family}_{model.num_hidden_states - 1}L", {"step": 1234})
    payload["head"] = {
        "dense.weight": torch.randn(hidden, hidden), "dense.bias": torch.randn(hidden),
        "norm.weight": torch.randn(hidden), "norm.bias": torch.randn(hidden),
        "output.weight": torch.randn(target, hidden), "output.bias": torch.randn(target),
    }
    save_atomic(payload, path)


def load_in_s3prl(path: Path, family: str) -> torch.nn.Module:
    from s3prl.upstream.audio_albert import hubconf as albert_hub
    from s3prl.upstream.mockingjay import hubconf as mockingjay_hub
    from s3prl.upstream.mockingjay.model import TransformerSpecPredictionHead

    local = albert_hub.audio_albert_local if family == "aalbert" else mockingjay_hub.mockingjay_local
    expert = local(ckpt=str(path)).eval()  # s3prl leaves dropout on unless asked
    # s3prl's loader only prints missing keys: make sure every weight arrived.
    stored = torch.load(path, map_location="cpu", weights_only=True)  # our export is plain data
    loaded = expert.transformer.model.state_dict()
    if set(loaded) != set(stored["Transformer"]):
        raise SystemExit(f"{path}: key sets differ: {sorted(set(loaded) ^ set(stored['Transformer']))[:8]}")
    for key, tensor in stored["Transformer"].items():
        if not torch.equal(loaded[key], tensor):
            raise SystemExit(f"s3prl did not load {key} from {path}")
    spec_head = TransformerSpecPredictionHead(expert.transformer.model_config, stored["SpecHead"]["output.weight"].shape[0])
    spec_head.load_state_dict(stored["SpecHead"], strict=True)
    return expert


def main() -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--full-size", action="store_true", help="768 hidden, 12 heads, FFN 3072, 3 and 12 layers")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    utterances = find_utterances(DEMO_ROOT, ["dev-clean"], progress=False)[:3]
    wavs = [read_audio(utt.path) for utt in utterances]
    batch = timing_batch(wavs, 4, 2.0)
    sizes = [(768, 3, 12, 3072), (768, 12, 12, 3072)] if args.full_size else [(32, 2, 4, 64)]
    print(f"{'layout':34s} {'size':>10s}  max |ours - s3prl| per hidden state (files alone / one batch)")
    with tempfile.TemporaryDirectory() as scratch:
        for seed, (layout, (hidden, layers, heads, ffn)) in enumerate((layout, size) for size in sizes for layout in LAYOUTS):
            model = build(layout, hidden, layers, heads, ffn, seed)
            ours_path, s3prl_path = Path(scratch) / "ours.ckpt", Path(scratch) / "s3prl.ckpt"
            save_with_head(model, ours_path)
            export_s3prl(ours_path, s3prl_path)
            theirs = load_in_s3prl(s3prl_path, layout.family)
            reloaded = build_upstream(None, s3prl_path)  # our importer reads the exported file back
            alone = max_deviation(model, theirs, [[wav] for wav in wavs])
            batched = max_deviation(model, theirs, [batch])
            again = max_deviation(model, reloaded, [[wav] for wav in wavs])
            print(f"{layout.name:34s} {f'{hidden}x{layers}L':>10s}  alone {' '.join(f'{v:.1e}' for v in alone.tolist())}")
            print(f"{'':34s} {'':>10s}  batch {' '.join(f'{v:.1e}' for v in batched.tolist())}")
            print(f"{'':34s} {'':>10s}  ours re-imported vs original: max {again.max().item():.1e}")


if __name__ == "__main__":
    main()

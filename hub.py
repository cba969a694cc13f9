"""torch.hub entries: one plain function per registered upstream.

    model = torch.hub.load(REPO, "aalbert_12L", source="local", ckpt="path/to/file.ckpt")
    with torch.inference_mode():
        out = model([wav])          # wav: 1-D float tensor, 16 kHz
    out["hidden_states"]            # N + 1 tensors of (batch, frames, hidden)

    model = torch.hub.load(REPO, "mockingjay_3L", source="local", pretrained="mockingjay_960hr")

Every entry takes ``ckpt`` (ours or s3prl's) and the options of ``upstream.build_upstream``:
``pretrained`` (a published checkpoint by s3prl name or alias, downloaded once into torch.hub's
cache; ``python hub.py --pretrained`` lists them), ``refresh`` (download it again),
``precision`` ("float32" or "bfloat16") and ``max_frames`` (attention span in stacked frames;
longer inputs are chunked). Without ``ckpt`` or ``pretrained`` the weights are random, and a
warning names the published checkpoints that fit. ``wav2vec2_base``, ``hubert_base`` and
``wavlm_base_plus`` are torchaudio's models for comparison (``pretrained=True``: torchaudio's
weights; ``ckpt``: a state-dict file of them).
Each entry returns an upstream; ``model(wavs)`` maps a list of 1-D 16 kHz float tensors (or
``model(wavs, wav_lengths)`` a padded batch and its lengths) to a dict with ``hidden_states``,
``last_hidden_state`` and ``lengths``.

Loading changes nothing in the calling process beyond building the model (no allocator,
thread or warnings-filter settings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from upstream import Upstream, build_upstream, entry_names, get_entry
from upstream.torchaudio_ssl import TorchaudioUpstream


def aalbert_3L(ckpt: Optional[str] = None, **options: Any) -> Upstream:
    """Audio ALBERT: one shared Transformer layer applied 3 times (768 hidden, R = 3); 4 hidden states."""
    return build_upstream("aalbert_3L", ckpt, **options)


def aalbert_6L(ckpt: Optional[str] = None, **options: Any) -> Upstream:
    """Audio ALBERT: one shared Transformer layer applied 6 times (768 hidden, R = 3); 7 hidden states."""
    return build_upstream("aalbert_6L", ckpt, **options)


def aalbert_12L(ckpt: Optional[str] = None, **options: Any) -> Upstream:
    """Audio ALBERT: one shared Transformer layer applied 12 times (768 hidden, R = 3); 13 hidden states."""
    return build_upstream("aalbert_12L", ckpt, **options)


def mockingjay_3L(ckpt: Optional[str] = None, **options: Any) -> Upstream:
    """Mockingjay, 3 Transformer layers (768 hidden, 12 heads, R = 3); 4 hidden states."""
    return build_upstream("mockingjay_3L", ckpt, **options)


def mockingjay_6L(ckpt: Optional[str] = None, **options: Any) -> Upstream:
    """Mockingjay, 6 Transformer layers (768 hidden, 12 heads, R = 3); 7 hidden states."""
    return build_upstream("mockingjay_6L", ckpt, **options)


def mockingjay_12L(ckpt: Optional[str] = None, **options: Any) -> Upstream:
    """Mockingjay, 12 Transformer layers (768 hidden, 12 heads, R = 3); 13 hidden states."""
    return build_upstream("mockingjay_12L", ckpt, **options)


def fbank(ckpt: Optional[str] = None, **options: Any) -> Upstream:
    """Kaldi fbank, 80 bins + delta + delta-delta (240 dims), no CMVN; 1 hidden state."""
    return build_upstream("fbank", ckpt, **options)


def mel(ckpt: Optional[str] = None, **options: Any) -> Upstream:
    """Exactly the Transformer models' input: 80 log-mel + delta, per-utterance CMVN; 1 hidden state."""
    return build_upstream("mel", ckpt, **options)


def mel_raw(ckpt: Optional[str] = None, **options: Any) -> Upstream:
    """80 log-mel + delta without CMVN: keeps the spectral mean that pooled probes need; 1 hidden state."""
    return build_upstream("mel_raw", ckpt, **options)


def model_input(ckpt: Optional[str] = None, **options: Any) -> Upstream:
    """A Transformer checkpoint's own input: its front end's features stacked R frames to its frame
    rate, no encoder (ckpt=PATH; without it, the presets': 480 dims per 30 ms); 1 hidden state."""
    return build_upstream("model_input", ckpt, **options)


def wav2vec2_base(ckpt: Optional[str] = None, **options: Any) -> TorchaudioUpstream:
    """wav2vec 2.0 Base from torchaudio (WAV2VEC2_BASE, LibriSpeech 960 h; 12 layers, 768 hidden,
    20 ms frames); 13 hidden states."""
    return build_upstream("wav2vec2_base", ckpt, **options)


def hubert_base(ckpt: Optional[str] = None, **options: Any) -> TorchaudioUpstream:
    """HuBERT Base from torchaudio (HUBERT_BASE, LibriSpeech 960 h; 12 layers, 768 hidden, 20 ms frames); 13 hidden states."""
    return build_upstream("hubert_base", ckpt, **options)


def wavlm_base_plus(ckpt: Optional[str] = None, **options: Any) -> TorchaudioUpstream:
    """WavLM Base+ from torchaudio (WAVLM_BASE_PLUS, 94k h; 12 layers, 768 hidden, 20 ms frames); 13 hidden states."""
    return build_upstream("wavlm_base_plus", ckpt, **options)


def from_checkpoint(ckpt: str, **options: Any) -> Upstream:
    """Build whatever model a checkpoint describes (ours or s3prl's), any family or depth."""
    return build_upstream(None, ckpt, **options)


FROM_CHECKPOINT = from_checkpoint.__name__

ENTRIES = (
    "aalbert_3L",
    "aalbert_6L",
    "aalbert_12L",
    "mockingjay_3L",
    "mockingjay_6L",
    "mockingjay_12L",
    "fbank",
    "mel",
    "mel_raw",
    "model_input",
    "wav2vec2_base",
    "hubert_base",
    "wavlm_base_plus",
)
__all__ = [*ENTRIES, FROM_CHECKPOINT]


def _describe_entries() -> str:
    """One line per entry: name and summary (torch.hub.list/help read GitHub repos only)."""
    lines = [f"{name:16s} {get_entry(name).description.splitlines()[0]}" for name in entry_names()]
    lines.append(f"{FROM_CHECKPOINT:16s} {from_checkpoint.__doc__.splitlines()[0]}")
    return "\n".join(lines)


def _export_main(argv: list[str]) -> None:
    """``python hub.py export -k OUR.ckpt -o FILE``: write our checkpoint in s3prl's format."""
    from upstream.s3prl.export import S3PRL_VERSION, export_s3prl
    from utility.cli import ArgumentParser, check_output_is_not_an_input

    parser = ArgumentParser(
        prog="hub.py export",
        description=f"Write one of our Mockingjay/AALBERT checkpoints in s3prl {S3PRL_VERSION}'s format "
        "(load it there with s3prl.upstream.mockingjay.hubconf.mockingjay_local(ckpt=FILE) or audio_albert_local).",
    )
    parser.add_argument("-k", "--ckpt", required=True, help="our checkpoint (e.g. result/pretrain/NAME/best.ckpt)")
    parser.add_argument("-o", "--output", required=True, help="the s3prl-format file to write")
    args = parser.parse_args(argv)
    check_output_is_not_an_input(args.output, [args.ckpt], "-o")
    path = export_s3prl(args.ckpt, args.output)
    print(f"wrote {path} (s3prl {S3PRL_VERSION} format)")


def _main(argv: Optional[list[str]] = None) -> None:
    """``python hub.py``: list the entries; ``--pretrained``: the published checkpoints;
    ``python hub.py NAME [-k CKPT] AUDIO...``: extract (options anywhere on the line);
    ``export``: see above."""
    import sys

    import torch

    from upstream import read_audio
    from upstream.audio import check_waveforms
    from upstream.catalogue import catalogue_table
    from utility.cli import ArgumentParser

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        _export_main(argv[1:])
        return
    parser = ArgumentParser(
        description="List the upstreams or the published checkpoints, extract hidden states from audio files, "
        "or (python hub.py export -k OUR.ckpt -o FILE) write a checkpoint in s3prl's format."
    )
    parser.add_argument("name", nargs="?", help=f"upstream name (omit to list them), or {FROM_CHECKPOINT} with -k")
    parser.add_argument("audio", nargs="*", help="wav/flac files")
    parser.add_argument("-k", "--ckpt", help="checkpoint (ours or s3prl's)")
    parser.add_argument(
        "--pretrained", action="store_true", help="list the published checkpoints and the entries they load under"
    )
    args = parser.parse_intermixed_args(argv)
    if args.pretrained:
        print(catalogue_table())
        return
    if args.name is None:
        print(_describe_entries())
        return
    if args.ckpt is not None and args.name not in (*entry_names(), FROM_CHECKPOINT) and Path(args.name).is_file():
        args.audio.insert(0, args.name)  # ``hub.py -k CKPT a.flac``: the checkpoint names the model
        args.name = FROM_CHECKPOINT
    if not args.audio:
        parser.error("give at least one audio file to extract")
    if args.name == FROM_CHECKPOINT and args.ckpt is None:
        parser.error(f"{FROM_CHECKPOINT} builds what a checkpoint describes: give it with -k CKPT")
    model = build_upstream(None if args.name == FROM_CHECKPOINT else args.name, args.ckpt)
    wavs = [read_audio(path) for path in args.audio]
    check_waveforms(wavs, model.min_samples, names=args.audio)  # errors name the file
    with torch.inference_mode():
        out = model(wavs)
    print(f"{args.name}: {len(out['hidden_states'])} hidden states, one frame per {model.downsample_rate} samples")
    for path, length in zip(args.audio, out["lengths"].tolist()):
        print(f"  {path}: {length} frames")
    for index, state in enumerate(out["hidden_states"]):
        real = state[0, : out["lengths"][0]]
        print(f"  state {index:2d}: {tuple(state.shape)}  first item mean {real.mean():+.4f} std {real.std():.4f}")


if __name__ == "__main__":
    from utility.cli import run_cli

    run_cli(_main, memory_hint="give fewer or shorter audio files at once")

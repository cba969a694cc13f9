"""Objective parity with s3prl 0.4.18: our pretraining loss, gradients and masking against s3prl's.

Measures two things:

1. Loss and gradients. Our ``MaskedAcousticModel`` + ``masked_l1`` against s3prl 0.4.18's
   ``TransformerForMaskedAcousticModel`` (its L1 loss) at the same weights (s3prl's initial
   weights, mapped with ``s3prl_encoder_state`` / ``s3prl_head_state``), the same inputs and the
   same masks (drawn by our ``mask_frames``), in float32 and float64. Inputs: the aalbert_3L front
   end's features of the first 4 utterances of ``--root``/``--subset``, cut to 3/4/5/6 s (so there is
   padding). Small models (hidden 64, 4 heads, FFN 128, 3 layers, dropout 0), four cases:
   R = 1 span 7 and R = 3 span 1, each with unshared (Mockingjay) and shared (AALBERT) layers.
   s3prl's gradients are mapped through the same functions and compared parameter by parameter.
2. Masking statistics. Our ``mask_frames`` against s3prl's ``generate_masked_acoustic_model_data``
   (proportion 0.15, span fixed, overlap allowed, no frequency masking, no noise) over 2000
   utterances of random length (150-1500 raw frames) per rate: selected share, span run lengths,
   zero / random / keep modes, first / last position selected, padding selected, and whether the
   random mode copies contiguous source frames.

s3prl's side runs in another interpreter (``--s3prl-python``, one where s3prl 0.4.18 imports),
because s3prl's top-level package names (upstream, utility, pretrain) collide with ours; the two
sides exchange tensors through a temporary folder. pandas and librosa are stubbed on s3prl's
side: only its dataset / plotting modules import them, the model and the masking function do
not use them. Such an interpreter:

    python -m venv --system-site-packages /path/to/s3prl-venv
    /path/to/s3prl-venv/bin/pip install --no-deps s3prl==0.4.18

Run (about 10 s on one CPU thread):

    OMP_NUM_THREADS=1 python scripts/s3prl_objective_parity.py --s3prl-python /path/to/s3prl-venv/bin/python
    OMP_NUM_THREADS=1 python scripts/s3prl_objective_parity.py --s3prl-python /path/to/s3prl-venv/bin/python \\
        --root /path/to/LibriSpeech --subset dev-clean --json parity.json
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
DEMO_ROOT = REPO / "data" / "demo"

SMALL = dict(hidden_size=64, num_heads=4, intermediate_size=128, num_layers=3)
CASES = [  # name, R, span, share_layer
    ("R1_mockingjay", 1, 7, False),
    ("R1_aalbert", 1, 7, True),
    ("R3_mockingjay", 3, 1, False),
    ("R3_aalbert", 3, 1, True),
]


def s3prl_config(share: bool) -> dict[str, Any]:
    """s3prl ``TransformerConfig`` values of the small test model."""
    return dict(
        hidden_size=SMALL["hidden_size"],
        num_hidden_layers=SMALL["num_layers"],
        num_attention_heads=SMALL["num_heads"],
        hidden_act="gelu",
        intermediate_size=SMALL["intermediate_size"],
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        share_layer=share,
        pre_layer_norm=False,
    )


# ----------------------------------------------------------------------------- s3prl side
def s3prl_side(work: Path) -> None:
    """Run under the s3prl interpreter: read ``work/*_data.pt`` and ``work/mask_stats_in.pt``,
    write s3prl's initial weights, losses and gradients (``work/<case>_s3prl.pt``) and its masks
    (``work/mask_stats_s3prl.pt``)."""
    torch.set_num_threads(1)
    spec = importlib.util.find_spec("s3prl")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{sys.executable}: s3prl is not installed here")
    sys.path.insert(0, list(spec.submodule_search_locations)[0])  # s3prl's modules import each other top-level
    for name in ("pandas", "librosa"):
        sys.modules[name] = types.ModuleType(name)
    from pretrain.mockingjay.pretrain_expert import TransformerForMaskedAcousticModel
    from pretrain.mockingjay.task import fast_position_encoding, generate_masked_acoustic_model_data
    from upstream.mockingjay.model import TransformerConfig

    # 1. loss and gradients on our inputs / masks
    for name, rate, span, share in CASES:
        data = torch.load(work / f"{name}_data.pt")
        config = TransformerConfig(s3prl_config(share))
        config.loss = "L1"
        torch.manual_seed(123)
        model = TransformerForMaskedAcousticModel(config, data["masked_stacked"].shape[-1], data["target_stacked"].shape[-1])
        out: dict[str, Any] = {
            "Transformer": {k: v.clone() for k, v in model.Transformer.state_dict().items()},
            "SpecHead": {k: v.clone() for k, v in model.SpecHead.state_dict().items()},
        }
        for dtype in (torch.float32, torch.float64):
            model.zero_grad()
            m = model.to(dtype)
            batch, seq = data["masked_stacked"].shape[:2]
            pos = fast_position_encoding(seq, config.hidden_size).to(dtype).expand(batch, seq, -1)
            loss, _ = m(
                data["masked_stacked"].to(dtype),
                pos,
                data["mask_label"],
                data["attn_mask"].to(dtype),
                data["target_stacked"].to(dtype),
            )
            loss.backward()
            tag = "f32" if dtype == torch.float32 else "f64"
            out[f"loss_{tag}"] = loss.detach().double()
            out[f"grad_T_{tag}"] = {n: p.grad.detach().clone() for n, p in m.Transformer.named_parameters()}
            # shared layers: named_parameters lists the layer once; give every index its grad
            if share:
                for n in list(out[f"grad_T_{tag}"]):
                    if n.startswith("encoder.layer.0."):
                        for i in range(1, config.num_hidden_layers):
                            out[f"grad_T_{tag}"][n.replace("layer.0.", f"layer.{i}.")] = out[f"grad_T_{tag}"][n]
            out[f"grad_H_{tag}"] = {n: p.grad.detach().clone() for n, p in m.SpecHead.named_parameters()}
        torch.save(out, work / f"{name}_s3prl.pt")

    # 2. s3prl's masking, many draws: return inputs / outputs for statistics
    random.seed(0)
    torch.manual_seed(0)
    stats_in = torch.load(work / "mask_stats_in.pt")
    results = {}
    for key, spec_ in stats_in.items():
        span = spec_["span"]
        cfg = dict(
            mask_proportion=0.15,
            mask_consecutive_min=span,
            mask_consecutive_max=span,
            mask_allow_overlap=True,
            mask_bucket_ratio=1.2,
            mask_frequency=0,
            noise_proportion=0.0,
            position_encoding_size=SMALL["hidden_size"],
        )
        masked_all, label_all = [], []
        for batch in spec_["batches"]:
            masked, _, label, _, _ = generate_masked_acoustic_model_data((batch.clone(),), cfg)
            masked_all.append(masked)
            label_all.append(label[:, :, 0])  # label is the same over the feature axis (no frequency masking)
        results[key] = dict(masked=masked_all, selected=label_all)
    torch.save(results, work / "mask_stats_s3prl.pt")


# ----------------------------------------------------------------------------- our side
def our_side(s3prl_python: str, corpus: Path, work: Path) -> dict[str, Any]:
    """Prepare inputs and masks, run s3prl's side, compare. Returns the report
    (per case: losses and the largest gradient difference; ``masking_statistics``)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from pretrain.masking import mask_frames, masked_l1
    from pretrain.model import MaskedAcousticModel, s3prl_head_state
    from pretrain.settings import MaskingSettings
    from upstream.audio import read_audio
    from upstream.config import EncoderConfig
    from upstream.encoder import TransformerEncoder, stack_frames
    from upstream.frontend import FeatureExtractor
    from upstream.presets import transformer_preset
    from upstream.s3prl.read import s3prl_encoder_state

    torch.set_num_threads(1)
    report: dict[str, Any] = {}
    # real features: 4 utterances of the corpus subset, the aalbert_3L front end
    frontend = transformer_preset("aalbert", 3).frontend
    extractor = FeatureExtractor(frontend)
    files = sorted(corpus.rglob("*.flac"))[:4]
    if len(files) < 4:
        raise SystemExit(f"{corpus}: need at least 4 .flac files, found {len(files)}")
    wavs = [read_audio(f) for f in files]
    wavs = [w[: 16000 * (3 + i)] for i, w in enumerate(wavs)]  # different lengths -> padding
    feats = extractor(wavs, with_target=True)
    masking_fields = {f.name for f in dataclasses.fields(MaskingSettings)}
    base = dict(
        proportion=0.15,
        span=None,
        zero_probability=0.8,
        random_probability=0.1,
        frequency_width=0,
        noise_proportion=0.0,
        noise_std=0.2,
    )
    msettings = MaskingSettings(**{k: v for k, v in base.items() if k in masking_fields})

    def make_data(name: str, rate: int) -> dict[str, Any]:
        """Masked batch of case ``name``: raw (B, T, D) and R-stacked (B, S, D*R) tensors, the
        (B, S) selection, s3prl's (B, S) attention mask and (B, S, Dt*R) loss label."""
        # make sure zero and random corruption modes both occur: redraw seeds until they do
        for attempt in range(200):
            gens = [torch.Generator().manual_seed(1000 + 10 * attempt + i) for i in range(len(wavs))]
            masked, selected = mask_frames(feats.inputs, feats.lengths, gens, msettings, rate, frontend.base_dim)
            modes = set()
            xs, _ = stack_frames(masked, feats.lengths, rate)
            xc, _ = stack_frames(feats.inputs, feats.lengths, rate)
            for b in range(len(wavs)):
                sel = selected[b]
                if (xs[b][sel] == 0).all():
                    modes.add("zero")
                elif torch.equal(xs[b][sel], xc[b][sel]):
                    modes.add("keep")
                else:
                    modes.add("random")
            if {"zero", "random"} <= modes:
                break
        ms, slen = stack_frames(masked, feats.lengths, rate)
        ts, _ = stack_frames(feats.targets, feats.lengths, rate)
        attn = (torch.arange(ms.shape[1])[None, :] < slen[:, None]).float()
        label = selected[:, :, None].expand(-1, -1, ts.shape[-1]).contiguous()
        data = dict(
            masked=masked,
            lengths=feats.lengths,
            targets=feats.targets,
            selected=selected,
            masked_stacked=ms.contiguous(),
            target_stacked=ts.contiguous(),
            attn_mask=attn,
            mask_label=label,
            modes=sorted(modes),
        )
        torch.save(data, work / f"{name}_data.pt")
        return data

    datas = {name: make_data(name, rate) for name, rate, span, share in CASES}

    # inputs for the masking statistics: many utterance lengths, random nonzero features
    g = torch.Generator().manual_seed(7)
    stats_in = {}
    for rate, span in ((1, 7), (3, 1)):
        batches, lengths_all = [], []
        for _ in range(250):
            lengths = torch.randint(150, 1500, (8,), generator=g)  # raw frames
            slen = lengths // rate
            x = torch.zeros(8, int(slen.max()), 4 * rate)
            for b in range(8):
                x[b, : slen[b]] = torch.randn(int(slen[b]), 4 * rate, generator=g) + 5.0  # never zero
            batches.append(x)
            lengths_all.append(lengths)
        stats_in[f"R{rate}"] = dict(span=span, rate=rate, batches=batches, lengths=lengths_all)
    torch.save(stats_in, work / "mask_stats_in.pt")

    # ---- run s3prl's side (without our repository on its path: the package names collide)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(
        [s3prl_python, str(Path(__file__).resolve()), "--s3prl-worker", str(work)],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
    )
    if done.returncode:
        print(done.stdout[-3000:], done.stderr[-5000:], file=sys.stderr)
        raise SystemExit(f"s3prl side failed under {s3prl_python} (exit {done.returncode})")

    # ---- loss / gradient parity
    for name, rate, span, share in CASES:
        data, theirs = datas[name], torch.load(work / f"{name}_s3prl.pt")
        cfg = EncoderConfig(
            input_dim=frontend.feature_dim,
            downsample_rate=rate,
            hidden_size=SMALL["hidden_size"],
            num_layers=SMALL["num_layers"],
            num_heads=SMALL["num_heads"],
            intermediate_size=SMALL["intermediate_size"],
            share_layer=share,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            max_frames=0,
        )
        model = MaskedAcousticModel(TransformerEncoder(cfg), frontend.target_dim)
        model.encoder.load_state_dict(s3prl_encoder_state(theirs["Transformer"], cfg))
        model.head.load_state_dict(s3prl_head_state(theirs["SpecHead"]))
        model.eval()  # dropout 0 anyway
        case: dict[str, Any] = {"modes_in_batch": data["modes"], "selected_positions": int(data["selected"].sum())}
        for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
            model.zero_grad()
            m = model.to(dtype)
            pred = m(data["masked"].to(dtype), data["lengths"])
            total, count = masked_l1(pred, data["targets"].to(dtype), data["lengths"], data["selected"], rate)
            loss = total / count
            loss.backward()
            g_enc = {k: v.grad for k, v in m.encoder.named_parameters()}
            g_head = {k: v.grad for k, v in m.head.named_parameters()}
            t_enc = s3prl_encoder_state(theirs[f"grad_T_{tag}"], cfg)
            t_head = s3prl_head_state(theirs[f"grad_H_{tag}"])
            if set(t_enc) != set(g_enc) or set(t_head) != set(g_head):
                raise RuntimeError(f"{name}: s3prl's gradients map to other parameter names than ours")
            diffs = {k: float((g_enc[k].double() - t_enc[k].double()).abs().max()) for k in g_enc}
            diffs.update({"head." + k: float((g_head[k].double() - t_head[k].double()).abs().max()) for k in g_head})
            scale = max(float(g.abs().max()) for g in list(g_enc.values()) + list(g_head.values()))
            worst = max(diffs, key=diffs.get)
            case[tag] = dict(
                loss_ours=float(loss.detach()),
                loss_s3prl=float(theirs[f"loss_{tag}"]),
                loss_absdiff=abs(float(loss.detach()) - float(theirs[f"loss_{tag}"])),
                grad_max_absdiff=diffs[worst],
                grad_worst_param=worst,
                grad_max_abs=scale,
                n_params=len(diffs),
            )
        report[name] = case

    # ---- masking statistics
    theirs = torch.load(work / "mask_stats_s3prl.pt")
    stats = {}
    for key, spec in stats_in.items():
        rate, span = spec["rate"], spec["span"]
        ours_sel, ours_masked = [], []
        for i, (x, lengths) in enumerate(zip(spec["batches"], spec["lengths"])):
            slen = lengths // rate
            raw = x.reshape(x.shape[0], -1, 4)  # (B, S*R, 4) raw frames
            gens = [torch.Generator().manual_seed(10_000 * i + b) for b in range(x.shape[0])]
            masked, selected = mask_frames(raw, slen * rate, gens, msettings, rate, 4)
            ours_masked.append(masked.reshape(x.shape[0], -1, 4 * rate)[:, : x.shape[1]])
            ours_sel.append(selected)
        for who, masked_l, sel_l in (("ours", ours_masked, ours_sel), ("s3prl", theirs[key]["masked"], theirs[key]["selected"])):
            stats[f"{key}_{who}"] = masking_statistics(spec, masked_l, sel_l)
    report["masking_statistics"] = stats
    return report


def masking_statistics(spec: dict[str, Any], masked_l: list[torch.Tensor], sel_l: list[torch.Tensor]) -> dict[str, Any]:
    """Statistics of one side's masks. ``spec["batches"]``: unmasked (B, S, 4R) inputs;
    ``masked_l``: the masked (B, S, 4R) inputs; ``sel_l``: (B, S) bool selections."""
    rate, span = spec["rate"], spec["span"]
    shares, runs = [], []
    modes = {"zero": 0, "random": 0, "keep": 0}
    last_sel = first_sel = n_utt = pad_sel = 0
    rand_contig = rand_total = 0
    for x, masked, sel, lengths in zip(spec["batches"], masked_l, sel_l, spec["lengths"]):
        slen = lengths // rate
        for b in range(x.shape[0]):
            length = int(slen[b])
            s = sel[b, :length]
            pad_sel += int(sel[b, length:].sum())
            n_utt += 1
            shares.append(float(s.float().mean()))
            last_sel += int(s[-1])
            first_sel += int(s[0])
            # runs of consecutive selected positions
            run = 0
            for t in s.int().tolist() + [0]:
                if t:
                    run += 1
                elif run:
                    runs.append(run)
                    run = 0
            xs, ms_ = x[b, :length][s], masked[b, :length][s]
            if (ms_ == 0).all():
                modes["zero"] += 1
            elif torch.equal(xs, ms_):
                modes["keep"] += 1
            else:
                modes["random"] += 1
                # are replacements contiguous copies? (source index of each replaced frame)
                src = []
                for row in ms_:
                    hit = (x[b, :length] == row).all(-1).nonzero()
                    src.append(int(hit[0]) if len(hit) else -1)
                pos = s.nonzero().view(-1).tolist()
                for j in range(1, len(pos)):
                    if pos[j] == pos[j - 1] + 1 and src[j] != -1:
                        rand_total += 1
                        rand_contig += int(src[j] == src[j - 1] + 1)
    t = torch.tensor(shares)
    r_ = torch.tensor(runs, dtype=torch.float)
    return dict(
        utterances=n_utt,
        span=span,
        selected_share_mean=float(t.mean()),
        selected_share_min=float(t.min()),
        selected_share_max=float(t.max()),
        run_length_mean=float(r_.mean()),
        run_length_mode=int(r_.mode().values),
        share_of_runs_equal_span=float((r_ == span).float().mean()),
        mode_zero=modes["zero"] / n_utt,
        mode_random=modes["random"] / n_utt,
        mode_keep=modes["keep"] / n_utt,
        last_position_selected_rate=last_sel / n_utt,
        first_position_selected_rate=first_sel / n_utt,
        padding_positions_selected=pad_sel,
        random_mode_adjacent_pairs_copied_contiguously=(rand_contig / rand_total) if rand_total else None,
    )


def print_report(report: dict[str, Any]) -> None:
    print(
        f"{'case':<15}{'params':>7}{'loss ours f32':>15}{'loss s3prl f32':>16}{'|diff|':>10}"
        f"{'grad diff f32':>15}{'max |grad|':>12}{'grad diff f64':>15}"
    )
    for name, *_ in CASES:
        f32, f64 = report[name]["f32"], report[name]["f64"]
        print(
            f"{name:<15}{f32['n_params']:>7}{f32['loss_ours']:>15.7f}{f32['loss_s3prl']:>16.7f}"
            f"{f32['loss_absdiff']:>10.1e}{f32['grad_max_absdiff']:>15.1e}{f32['grad_max_abs']:>12.1e}"
            f"{f64['grad_max_absdiff']:>15.1e}"
        )
    print()
    print(
        f"{'masking':<10}{'share':>8}{'[min, max]':>16}{'run len':>9}{'=span':>7}{'zero/random/keep':>20}"
        f"{'last':>8}{'first':>8}{'pad':>5}{'contig':>8}"
    )
    for key, s in report["masking_statistics"].items():
        contig = s["random_mode_adjacent_pairs_copied_contiguously"]
        share_range = "[{:.3f}, {:.3f}]".format(s["selected_share_min"], s["selected_share_max"])
        modes = "{:.3f}/{:.3f}/{:.3f}".format(s["mode_zero"], s["mode_random"], s["mode_keep"])
        contig_text = "-" if contig is None else f"{contig:.3f}"
        print(
            f"{key:<10}{s['selected_share_mean']:>8.4f}{share_range:>16}"
            f"{s['run_length_mean']:>9.2f}{s['share_of_runs_equal_span']:>7.3f}{modes:>20}"
            f"{s['last_position_selected_rate']:>8.4f}{s['first_position_selected_rate']:>8.4f}"
            f"{s['padding_positions_selected']:>5}{contig_text:>8}"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--s3prl-python", help="interpreter where s3prl 0.4.18 imports (required)")
    parser.add_argument("--root", default=str(DEMO_ROOT), help="LibriSpeech-layout corpus (default: data/demo)")
    parser.add_argument("--subset", default="dev-clean", help="subset whose first 4 utterances are used")
    parser.add_argument("--json", help="also write the full result to this file")
    parser.add_argument("--s3prl-worker", metavar="WORK", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.s3prl_worker:
        s3prl_side(Path(args.s3prl_worker))
        return {}
    if not args.s3prl_python:
        parser.error("--s3prl-python is required")
    corpus = Path(args.root) / args.subset
    if not corpus.is_dir():
        parser.error(f"no such corpus subset: {corpus}")
    with tempfile.TemporaryDirectory(prefix="s3prl_parity_") as work:
        report = our_side(args.s3prl_python, corpus, Path(work))
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()

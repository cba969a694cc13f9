"""Our checkpoint format, torch.hub entries and the registry."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings

import pytest
import torch

import hub
from conftest import REPO, tiny_config
from upstream import Upstream, UpstreamEntry, build_upstream, entry_names, get_entry, register, save_upstream
from upstream import registry
from utility.checkpoint_file import read_checkpoint_file
from upstream.presets import transformer_preset


def _tiny_checkpoint(tmp_path, family="aalbert", num_layers=3):
    torch.manual_seed(1)
    model = Upstream(tiny_config(family, num_layers=num_layers)).eval()
    path = save_upstream(model, tmp_path / f"{family}_{num_layers}.ckpt", name=f"{family}_{num_layers}L")
    return model, path


def test_checkpoint_round_trip_gives_identical_hidden_states(tmp_path, demo_wavs):
    model, path = _tiny_checkpoint(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary file may be left behind"
    data = torch.load(path, weights_only=True)
    assert data["upstream"]["config"]["encoder"]["hidden_size"] == 32
    loaded = build_upstream("aalbert_3L", path)
    with torch.inference_mode():
        for a, b in zip(model(demo_wavs)["hidden_states"], loaded(demo_wavs)["hidden_states"]):
            assert torch.equal(a, b)


def _local_hub_entrypoints():
    """What torch.hub.list returns, for a local checkout (torch.hub.list itself takes GitHub
    repos only): hubconf's public callables, imported the way torch.hub imports it."""
    module = torch.hub._import_module("hubconf", str(REPO / "hubconf.py"))
    return {name: getattr(module, name) for name in dir(module) if callable(getattr(module, name)) and not name.startswith("_")}


def test_torch_hub_lists_and_loads_entries(tmp_path, demo_wavs):
    entries = _local_hub_entrypoints()
    expected = {"aalbert_3L", "aalbert_6L", "aalbert_12L", "mockingjay_3L", "mockingjay_6L", "mockingjay_12L"}
    comparison = {"wav2vec2_base", "hubert_base", "wavlm_base_plus"}
    assert set(entries) == expected | comparison | {"fbank", "mel", "mel_raw", "model_input", "from_checkpoint"}
    assert "one shared Transformer layer applied 12 times" in entries["aalbert_12L"].__doc__
    model, path = _tiny_checkpoint(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checkpoint load must not warn about random weights
        loaded = torch.hub.load(str(REPO), "aalbert_3L", source="local", ckpt=str(path))
    with torch.inference_mode():
        assert torch.equal(model(demo_wavs[:1])["last_hidden_state"], loaded(demo_wavs[:1])["last_hidden_state"])


def test_every_registered_upstream_has_a_plain_hub_function(monkeypatch):
    built = []
    monkeypatch.setattr(hub, "build_upstream", lambda name, ckpt, **options: built.append((name, ckpt, options)))
    assert set(hub.ENTRIES) == set(entry_names())
    for name in entry_names():
        function = getattr(hub, name)
        assert function.__name__ == name and function.__module__ == "hub"  # written out, not generated
        entry = get_entry(name)
        states = entry.num_layers + 1 if entry.num_layers else 1
        summary = " ".join(function.__doc__.split("\n\n")[0].split())  # the first paragraph, wrapped or not
        assert summary.startswith(entry.description.splitlines()[0].rstrip("."))
        assert summary.endswith(f"; {states} hidden state{'s' if states > 1 else ''}.")
        function("model.ckpt", precision="bfloat16")
        assert built[-1] == (name, "model.ckpt", {"precision": "bfloat16"})


def test_hub_entry_without_checkpoint_warns_random():
    with pytest.warns(UserWarning, match="no checkpoint given, so the weights are RANDOM"):
        model = hub.aalbert_3L()
    assert model.num_hidden_states == 4


def test_name_fixes_family_and_depth(tmp_path):
    _, six_layer = _tiny_checkpoint(tmp_path, "aalbert", num_layers=6)
    with pytest.raises(ValueError, match="6-layer aalbert model, but 'aalbert_12L' has 12 layers; use 'aalbert_6L'"):
        build_upstream("aalbert_12L", six_layer)
    _, mockingjay = _tiny_checkpoint(tmp_path, "mockingjay", num_layers=3)
    with pytest.raises(ValueError, match="holds a mockingjay model, not aalbert"):
        build_upstream("aalbert_3L", mockingjay)
    generic = hub.from_checkpoint(str(mockingjay))
    assert generic.config.family == "mockingjay" and generic.num_hidden_states == 4


def test_missing_truncated_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        build_upstream("aalbert_3L", tmp_path / "nope.ckpt")
    _, path = _tiny_checkpoint(tmp_path)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        build_upstream("aalbert_3L", truncated)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a loadable checkpoint"):
        build_upstream("aalbert_3L", text)
    other = tmp_path / "other.ckpt"
    torch.save({"model": {"w": torch.zeros(2)}}, other)
    with pytest.raises(ValueError, match="neither a mam-checkpoint checkpoint nor an s3prl"):
        build_upstream("aalbert_3L", other)
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    with pytest.raises(ValueError, match="is empty"):
        build_upstream("aalbert_3L", empty)


class _Payload:
    """Unpickling this would run os.system and create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"format": "mam-checkpoint", "version": 1, "evil": _Payload(marker)}, path)
    with pytest.raises(ValueError, match="refused for safety"):
        build_upstream("aalbert_3L", path)
    with open(tmp_path / "evil.pkl", "wb") as stream:
        pickle.dump(_Payload(marker), stream)
    with pytest.raises(ValueError):
        read_checkpoint_file(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_mismatched_weights_name_missing_and_unexpected_keys(tmp_path):
    model, path = _tiny_checkpoint(tmp_path)
    data = torch.load(path, weights_only=True)
    state = data["upstream"]["state_dict"]
    state["surprise.weight"] = state.pop("input_norm.weight")
    torch.save(data, path)
    with pytest.raises(ValueError, match=r"missing keys \['input_norm.weight'\]; unexpected keys \['surprise.weight'\]"):
        build_upstream("aalbert_3L", path)


def test_registry_refuses_duplicates_and_isolates_missing_dependencies(monkeypatch):
    monkeypatch.setattr(registry, "_ENTRIES", dict(registry._ENTRIES))  # the test entry goes away after
    with pytest.raises(ValueError, match="'aalbert_3L' is already registered"):
        register(UpstreamEntry("aalbert_3L", "aalbert", lambda: transformer_preset("aalbert", 3), "dup", 3))
    register(
        UpstreamEntry(
            "needs_missing_package", "baseline", lambda: None, "test entry", requires=("package_that_is_not_installed",)
        )
    )
    with pytest.raises(ImportError, match="pip install package_that_is_not_installed"):
        build_upstream("needs_missing_package")
    with pytest.raises(ValueError, match="unknown upstream 'aalbert_4L'; available: aalbert_12L"):
        build_upstream("aalbert_4L")
    assert build_upstream("mel").num_hidden_states == 1  # the others still build


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        build_upstream("mel", precision="fp8")
    with pytest.raises(TypeError):
        hub.aalbert_3L(colour="blue")


def test_saved_checkpoints_get_ordinary_permissions(tmp_path):
    _, path = _tiny_checkpoint(tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# What a freed 256 MiB block does in a fresh process after the given setup: glibc's defaults
# serve it with mmap and give it back on free; the tuned allocator keeps it for reuse.
_FREE_PROBE = """
import ctypes, ctypes.util, os, sys, warnings
import torch
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
threads = torch.get_num_threads()
filters = list(warnings.filters)
{setup}
assert torch.get_num_threads() == threads, "the thread count changed"
assert warnings.filters == filters, "the warnings filters changed"
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
size = 256 << 20
block = libc.malloc(size)
ctypes.memset(block, 1, size)
before = rss()
libc.free(block)
print((before - rss()) >> 20)
"""


def _mib_returned_after(setup: str) -> int:
    probe = [sys.executable, "-c", _FREE_PROBE.format(setup=setup)]
    done = subprocess.run(probe, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc behaviour")
def test_hub_loading_leaves_the_host_process_settings_alone():
    hub_load = (
        "with warnings.catch_warnings():\n"
        "    warnings.simplefilter('ignore')\n"
        f"    torch.hub.load({str(REPO)!r}, 'aalbert_3L', source='local')"
    )
    assert _mib_returned_after(hub_load) >= 200  # glibc as it comes: the block went back
    # The check can fail: the entry points' own tuning keeps the block.
    tuned = "from utility.cpu_allocator import keep_freed_memory_for_reuse; keep_freed_memory_for_reuse()"
    assert _mib_returned_after(tuned) < 50


_FLUSH_PROBE = """
import warnings, torch
subnormal = lambda: (torch.tensor([1e-39]) * 1.0).item()  # 0.0 once subnormals flush to zero
torch.set_num_threads(2)  # so that a change to one thread shows on any machine
threads = torch.get_num_threads()
assert subnormal() != 0
with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    model = torch.hub.load({repo!r}, 'aalbert_3L', source='local')
    model([torch.randn(16000)])
assert subnormal() != 0, "importing or loading changed the floating-point mode"
from utility.process_defaults import apply_cli_process_defaults, use_task_threads
untouched = use_task_threads(1)  # a task's wish outside a command: nothing changes
applied = apply_cli_process_defaults()
print(subnormal(), applied["flush_denormal"], untouched, use_task_threads(1), threads)
"""


@pytest.mark.parametrize("user_threads", [None, "2"])
def test_only_the_commands_flush_subnormals_and_choose_threads(user_threads):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if user_threads is not None:
        env["OMP_NUM_THREADS"] = user_threads
    done = subprocess.run([sys.executable, "-c", _FLUSH_PROBE.format(repo=str(REPO))], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    value, flushed, untouched, threads, before = done.stdout.split()
    if flushed == "True":  # x86: the command's setting takes effect
        assert float(value) == 0.0
    # A task's thread choice applies only in a command, and only when the user chose none.
    assert int(untouched) == int(before)
    assert int(threads) == (1 if user_threads is None else int(before))


def test_the_readme_hub_snippet_runs_as_printed(tmp_path):
    """README's first Python block, with a tiny 12-layer checkpoint at its placeholder path: it
    loads the audio it uses (torchaudio.load would need torchcodec) and gives 13 hidden states."""
    from faults import run_command

    text = (REPO / "README.md").read_text()
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    _, path = _tiny_checkpoint(tmp_path, num_layers=12)
    snippet = snippet.replace('"path/to/model.ckpt"', repr(str(path)))
    # The lines that show an output: print what they show (without their comment).
    snippet = "\n".join(
        f"print(len({line.split('#')[0].strip()}))" if line.startswith("out[") else line for line in snippet.splitlines()
    )
    script = tmp_path / "snippet.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(REPO)!r})\n{snippet}\n")
    done = run_command([str(script)], cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["13", "1"]  # 13 hidden states, lengths of one item

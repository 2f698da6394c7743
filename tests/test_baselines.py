"""Baselines: reference paths, decode state, parameter matching, fast paths.

CPU tests check the references (the SSD recurrence against its quadratic form, softmax attention
against the SWAT reference's softmax mode), Mamba-2's decode state, HGRN2's lower bounds, the
one-line errors of fla-backed models off-GPU, the torch chunk_bwd_dqkwg that Gated DeltaNet trains
on where fla refuses its Triton kernel (against autograd through a naive per-chunk forward, against
fla's kernel under Triton's interpreter, and fla's dispatch to it), and parameter counts at every
preset (fla models are counted only where fla is installed: `pip install 'swat-harness[fla]'`; CI
without it skips them). The GPU tests, run on the device, check every fast path against its reference in bf16,
forward and backward, decoding against the full forward for every model, and (with
HARNESS_TRAIN_STEPS set) that a few hundred training steps at the small preset reduce the loss.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from baselines.fla_common import NeedsGPUError
from baselines.mamba2 import Mamba2Mixer, ssd_ref
from harness.config import ConfigError, load_config
from harness.model.build import build_model, matched_config, options_read, params_of
from harness.ops.softmax import softmax_attention
from harness.ops.swat.reference import swat_attention_ref
from harness.registry import MissingExtraError, get_model, models

FLA_MODELS = ["gla", "retnet", "hgrn2", "deltanet", "gated_deltanet"]
ALL_MODELS = ["swat", "transformer", "sliding_softmax", "mamba", "mamba2", *FLA_MODELS]
HAS_FLA = importlib.util.find_spec("fla") is not None
CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (run on the device)")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


# ---------------------------------------------------------------- references (CPU)

def ssd_quadratic(x, dt, A, B, C, D):
    """The SSD's attention form: y_t = sum_{s<=t} (C_t . B_s) exp(sum_{s<r<=t} dt_r A) dt_s x_s + D x_t."""
    rep = x.shape[2] // B.shape[2]
    Bh, Ch = B.repeat_interleave(rep, 2), C.repeat_interleave(rep, 2)  # b l h n
    cum = torch.cumsum(dt * A, dim=1)  # b l h
    decay = torch.exp(cum[:, :, None] - cum[:, None, :])  # b t s h
    causal = torch.tril(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool))[None, :, :, None]
    scores = torch.einsum("bthn,bshn->btsh", Ch, Bh) * decay.masked_fill(~causal, 0) * dt[:, None]
    return torch.einsum("btsh,bshp->bthp", scores, x) + x * D[:, None]


def test_ssd_reference_equals_its_quadratic_form_and_carries_state():
    torch.manual_seed(0)
    b, l, h, p, g, n = 2, 23, 4, 8, 2, 5
    x = torch.randn(b, l, h, p, dtype=torch.float64)
    dt = F.softplus(torch.randn(b, l, h, dtype=torch.float64))
    A = -torch.rand(h, dtype=torch.float64) * 2
    B, C = torch.randn(b, l, g, n, dtype=torch.float64), torch.randn(b, l, g, n, dtype=torch.float64)
    D = torch.randn(h, dtype=torch.float64)
    y, state = ssd_ref(x, dt, A, B, C, D)
    torch.testing.assert_close(y.double(), ssd_quadratic(x, dt, A, B, C, D), rtol=1e-5, atol=1e-5)
    y1, s1 = ssd_ref(x[:, :10], dt[:, :10], A, B[:, :10], C[:, :10], D)
    y2, s2 = ssd_ref(x[:, 10:], dt[:, 10:], A, B[:, 10:], C[:, 10:], D, initial_state=s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1).double(), y.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s2, state, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window,docs", [(None, False), (None, True), (7, False), (7, True)])
def test_softmax_attention_cpu_path_is_the_banded_softmax_reference(window, docs):
    torch.manual_seed(0)
    T, H, Hkv, d = 30, 4, 2, 16
    q, k, v = torch.randn(1, T, H, d), torch.randn(1, T, Hkv, d), torch.randn(1, T, Hkv, d)
    cu = torch.tensor([0, 9, 21, T], dtype=torch.int32) if docs else None
    out = softmax_attention(q, k, v, window, cu)
    ref = swat_attention_ref(q, k, v, torch.zeros(H), window or T, activation="softmax", cu_seqlens=cu)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def _varlen_taking_window_size(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, window_size=(-1, -1)):
    return {"window_size": window_size}


def _varlen_taking_is_causal(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, is_causal=False):
    return {"is_causal": is_causal}


def _varlen_taking_neither(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k):
    return {}


@pytest.mark.parametrize("varlen_attn, asked", [(_varlen_taking_window_size, {"window_size": (-1, 0)}),
                                                (_varlen_taking_is_causal, {"is_causal": True}),
                                                (_varlen_taking_neither, None)])
def test_torch_varlen_is_asked_for_causal_attention_in_the_keyword_this_torch_takes(monkeypatch, varlen_attn, asked):
    """torch's varlen flash kernel took `is_causal` in one release and `window_size` in a later one; a
    torch that takes neither leaves packed documents to flex_attention."""
    import types

    from harness.ops import softmax as sm
    module = types.ModuleType("torch.nn.attention.varlen")
    module.varlen_attn = varlen_attn
    monkeypatch.setitem(sys.modules, "torch.nn.attention.varlen", module)
    varlen = sm._find_torch_varlen()
    assert (None if varlen is None else varlen(*range(7))) == asked


def test_mamba2_prefill_state_continues_the_sequence():
    cfg = load_config("tiny").model
    torch.manual_seed(0)
    mixer = Mamba2Mixer(dataclasses.replace(cfg, d_inner=64))
    mixer.reset_special()
    x = torch.randn(2, 20, cfg.hidden_size)
    with torch.no_grad():
        full = mixer(x)
        y, state = mixer.prefill(x[:, :12])
        steps = []
        for t in range(12, 20):
            y_t, state = mixer.step(x[:, t:t + 1], state)
            steps.append(y_t)
    torch.testing.assert_close(y, full[:, :12], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.cat(steps, 1), full[:, 12:], atol=1e-5, rtol=1e-4)


def documented_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """mamba-ssm's `selective_state_update` as its docstring defines it (state [b, (h,) p, n]
    updated in place, output [b, (h,) p]): a stand-in for the Triton kernel, which needs a GPU."""
    heads = state.dim() == 4
    s = state if heads else state.unsqueeze(1)
    x, dt, z = (t if t is None or t.dim() == 3 else t.unsqueeze(1) for t in (x, dt, z))
    A = A if A.dim() == 3 else A.unsqueeze(0)
    B, C = (t if t.dim() == 3 else t.unsqueeze(1) for t in (B, C))
    D, dt_bias = (t if t is None or t.dim() == 2 else t.unsqueeze(0) for t in (D, dt_bias))
    dt = dt.float() + (dt_bias.float() if dt_bias is not None else 0)
    dt = F.softplus(dt) if dt_softplus else dt
    Bh, Ch = (t.float().repeat_interleave(x.shape[1] // t.shape[1], dim=1)[:, :, None] for t in (B, C))
    s.copy_(s * torch.exp(dt[..., None] * A) + (dt * x.float())[..., None] * Bh)
    out = (s * Ch).sum(-1) + (x.float() * D if D is not None else 0)
    out = (out * F.silu(z.float()) if z is not None else out).to(x.dtype)
    return out if heads else out[:, 0]


@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_decode_step_through_the_fused_state_update_equals_the_reference_step(name, monkeypatch):
    """The GPU decode step's wiring to mamba-ssm's fused state update (argument shapes, per-head
    broadcasts, dt bias and softplus, D, gating) gives the reference step's output and state, the
    state updated in place; the kernel itself is checked against this on the GPU."""
    module = importlib.import_module(f"baselines.{name}")
    torch.manual_seed(0)
    model = build_model(name, load_config("tiny").model, "cpu").eval()
    ids = torch.randint(0, 257, (2, 12))

    def decode(state):
        logits = []
        for t in range(8, 12):
            out, state = model.step(ids[:, t], state)
            logits.append(out)
        return torch.stack(logits), state

    with torch.no_grad():
        _, prompt_state = model.prefill(ids[:, :8])
        fused_in = [dict(layer, ssm=layer["ssm"].clone()) for layer in prompt_state]
        ref_logits, ref_state = decode(prompt_state)
        monkeypatch.setattr(module, "fast_state_update", lambda x: documented_state_update)
        fused_logits, fused_state = decode(fused_in)
    torch.testing.assert_close(fused_logits, ref_logits, atol=1e-4, rtol=1e-4)
    for before, after, ref in zip(fused_in, fused_state, ref_state):
        assert after["ssm"] is before["ssm"]  # written in place, as the kernel does
        torch.testing.assert_close(after["ssm"], ref["ssm"], atol=1e-4, rtol=1e-4)


def test_mamba2_rejects_a_width_that_is_not_whole_heads():
    cfg = dataclasses.replace(load_config("tiny").model, d_inner=100)
    with pytest.raises(ConfigError, match="multiple of headdim"):
        build_model("mamba2", cfg)


def test_mamba2_gated_norm_with_several_groups_normalizes_each_group_apart():
    """mamba-ssm's RMSNormGated takes group_size = d_inner / ngroups: each group has unit RMS before the
    weight, so scaling one group's features leaves the others' outputs unchanged."""
    cfg = dataclasses.replace(load_config("tiny").model, extra={"mamba2": {"ngroups": 2}})
    mixer = build_model("mamba2", cfg).blocks[0].mixer
    assert mixer.ngroups == 2
    torch.manual_seed(0)
    with torch.no_grad():
        mixer.norm.weight.uniform_(0.5, 1.5)
    y = torch.randn(3, mixer.d_inner)
    half = mixer.d_inner // 2
    out = mixer.norm(y)
    groups = (out / mixer.norm.weight).unflatten(-1, (2, half))
    torch.testing.assert_close(groups.pow(2).mean(-1), torch.ones(3, 2), atol=1e-4, rtol=1e-4)
    scaled = y.clone()
    scaled[:, half:] *= 10
    torch.testing.assert_close(mixer.norm(scaled)[:, :half], out[:, :half])


def test_hgrn2_lower_bounds_are_shared_monotone_and_zero_at_the_first_layer():
    from baselines.hgrn2 import LowerBounds
    bounds = LowerBounds(4, 8)
    with torch.no_grad():
        bounds.table.copy_(torch.randn(4, 8))
    rows = torch.stack([bounds(i) for i in range(4)])
    assert torch.all(rows[0] == 0) and torch.all(rows[1:] >= rows[:-1]) and torch.all(rows < 1)


# ---------------------------------------------------------------- parameter matching, listing

@pytest.mark.parametrize("preset", ["tiny", "small", "340m", "760m"])
def test_every_baseline_matches_the_reference_within_two_percent(preset):
    cfg = load_config(preset).model
    reference = params_of("transformer", cfg)
    names = [n for n in ALL_MODELS if HAS_FLA or n not in FLA_MODELS]
    for name in names:
        count = params_of(name, matched_config(name, cfg))
        assert abs(count - reference) / reference < 0.02, (name, preset, count, reference)


def test_paper_configs_of_the_fla_models():
    if not HAS_FLA:
        pytest.skip("flash-linear-attention is not installed (pip install 'swat-harness[fla]')")
    cfg = load_config("340m").model
    with torch.device("meta"):
        gla = get_model("gla").build(cfg).blocks[0].mixer.layer
        gdn = get_model("gated_deltanet").build(cfg).blocks[0].mixer.layer
        hgrn2 = get_model("hgrn2").build(cfg)
    assert (gla.num_heads, gla.key_dim, gla.value_dim) == (4, 512, 1024)
    assert (gdn.head_k_dim, gdn.num_heads, gdn.head_v_dim) == (256, 3, 512)
    assert hgrn2.blocks[0].mixer.layer.expand_ratio == 128
    assert hgrn2.blocks[0].mixer.bounds is hgrn2.blocks[5].mixer.bounds


@pytest.mark.parametrize("hidden", [128, 192, 256])
def test_hgrn2_lower_bounds_are_as_wide_as_the_forget_gates(hidden):
    """At a hidden size that is not a multiple of the expand ratio (192: one head of 128), the
    bounds still match the forget gates they bound (the scaling study's middle size)."""
    if not HAS_FLA:
        pytest.skip("flash-linear-attention is not installed (pip install 'swat-harness[fla]')")
    cfg = dataclasses.replace(load_config("tiny").model, hidden_size=hidden, num_layers=3, num_heads=hidden // 32)
    mixer = get_model("hgrn2").build(cfg).blocks[1].mixer
    assert mixer.layer_kwargs()["lower_bound"].shape == (mixer.layer.f_proj.out_features,)


def test_harness_list_shows_every_model_with_params_and_fast_path(capsys, monkeypatch):
    from harness import cli
    monkeypatch.setenv("COLUMNS", "250")
    cli.console.width = 250
    assert cli.main(["list", "--preset", "340m"]) == 0
    out = capsys.readouterr().out
    for name in ALL_MODELS:
        line = next((ln for ln in out.splitlines() if f" {name} " in ln), None)
        assert line is not None, name
        assert f" {get_model(name).fast_path_short()} " in line
    for name in ("unigram", "bigram"):  # fitted by counting: their size is known once they are fitted
        line = next(ln for ln in out.splitlines() if f" {name} " in ln)
        assert "n-gram" in line and "counts" in line
    for name in ("swat", "gla"):  # the whole fast-path line: an attention model, an fla one
        assert cli.main(["list", "--preset", "340m", "--model", name]) == 0
        assert f"fast path here: {get_model(name).fast_path()}" in capsys.readouterr().out


# ---------------------------------------------------------------- fla models off their GPU

def test_fla_models_off_gpu_fail_in_one_line():
    if not HAS_FLA:
        pytest.skip("flash-linear-attention is not installed (pip install 'swat-harness[fla]')")
    if CUDA:
        pytest.skip("this machine has a GPU")
    cfg = load_config("tiny").model
    for name in FLA_MODELS:
        model = build_model(name, cfg)
        with pytest.raises(NeedsGPUError, match="runs only on a CUDA GPU.*swat-harness\\[fla\\]"):
            model(torch.zeros(1, 4, dtype=torch.long))
        assert get_model(name).fast_path() == "no: needs a CUDA GPU"



# ---------------------------------------------------------------- a harness model at a config it cannot take

def one_error_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert all(needle in lines[0] for needle in needles), (needles, lines[0])


def list_lines(argv: list[str], capsys) -> tuple[dict, list[str]]:
    """`harness list` at these arguments: {model: its params column}, and the `?:` problem lines."""
    from harness import cli
    cli.console.width = 250
    assert cli.main(["list", *argv]) == 0
    out = capsys.readouterr().out.splitlines()
    counts = {cells[1].strip(): cells[3].strip() for cells in (ln.split("│") for ln in out) if len(cells) > 5}
    return counts, [ln for ln in out if ln.startswith("?: ")]


def test_a_harness_model_that_refuses_its_config_is_one_line(monkeypatch, capsys, tmp_path):
    """A layer refusing its arguments as it is built (fla's assert on head counts) at a config the user
    set: `list` shows `?` and the problem for that model alone, train stops in one line. Any other
    exception of a harness model's builder is a bug, and keeps its traceback."""
    from harness import cli, registry

    def refuses(cfg):
        assert False, "key dim must be divisible by num_heads of 4"

    def bug(cfg):
        raise RuntimeError("a bug")
    for name, build in (("t_refuses", refuses), ("t_bug", bug)):
        monkeypatch.setitem(registry._REG.models, name, dataclasses.replace(get_model("swat"), name=name, build=build))
    with pytest.raises(ConfigError, match="^model t_refuses cannot be built at this config: key dim must be "
                                          "divisible by num_heads of 4; change the model.\\* sizes$"):
        build_model("t_refuses", load_config("tiny").model, "meta")
    with pytest.raises(RuntimeError, match="a bug"):
        build_model("t_bug", load_config("tiny").model, "meta")
    monkeypatch.delitem(registry._REG.models, "t_bug")
    counts, problems = list_lines([], capsys)
    assert counts["t_refuses"] == "?" and counts["swat"] not in ("?", "") and counts["transformer"] != "?"
    assert problems == ["?: model t_refuses cannot be built at this config: key dim must be divisible by "
                        "num_heads of 4; change the model.* sizes"]
    assert cli.main(["train", "--model", "t_refuses", "--device", "cpu", "--out", str(tmp_path / "run")]) == 2
    one_error_line(capsys.readouterr().err, "model t_refuses cannot be built at this config")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not HAS_FLA, reason="needs fla")
def test_fla_layers_that_refuse_a_valid_config_show_in_list(capsys):
    """hidden 60 with rope off is a valid config; GLA's 4 heads cannot split its key dim of 30."""
    counts, problems = list_lines(["--set", "model.rope=false", "--set", "model.hidden_size=60"], capsys)
    assert counts["gla"] == "?" and counts["swat"] != "?" and counts["mamba"] != "?"
    assert ("?: model gla cannot be built at this config: key dim must be divisible by num_heads of 4; change the "
            "model.* sizes or its options under model.extra.gla") in problems


@pytest.mark.skipif(not HAS_FLA, reason="needs fla")
def test_fla_layer_options_are_the_layers_keyword_arguments(capsys):
    """model.extra.<fla model> holds the fla layer's named keyword arguments: an unknown key was passed
    on (a TypeError deep in the build) or, where the layer takes **kwargs (DeltaNet, RetNet), dropped."""
    cfg = load_config("tiny").model
    for name in FLA_MODELS:
        reads = options_read(get_model(name))
        assert set(importlib.import_module(f"baselines.{name}").options(cfg)) <= reads, name
        assert not reads & {"hidden_size", "norm_eps", "layer_idx", "d_model", "kwargs"}, name
        cfg.extra = {name: {"nonsense": 1}}
        with pytest.raises(ConfigError, match=f"^model.extra.{name}.nonsense is not an option of {name} "
                                              f"\\(it reads .*num_heads.*\\); options shared by all models"):
            build_model(name, cfg, "meta")
    cfg.extra = {"gla": {"hidden_size": 32}}
    with pytest.raises(ConfigError, match="hidden_size is a model field: --set model.hidden_size="):
        build_model("gla", cfg, "meta")
    cfg.extra = {"gla": {"num_heads": 2, "feature_map": "relu"}}  # not among the defaults, but the layer's
    assert build_model("gla", cfg, "meta").blocks[0].mixer.layer.num_heads == 2
    counts, problems = list_lines(["--set", "model.extra={gla: {nonsense: 1}}"], capsys)
    assert counts["gla"] == "?" and counts["swat"] != "?" and len(problems) == 1
    assert problems[0].startswith("?: model.extra.gla.nonsense is not an option of gla (it reads clamp_min, ")


def test_mamba2_reads_its_declared_options_only():
    cfg = load_config("tiny").model
    from baselines import mamba2
    assert set(mamba2.options(cfg)) == set(mamba2.OPTIONS) == options_read(get_model("mamba2"))
    cfg.extra = {"mamba2": {"headdim": 16}}
    assert build_model("mamba2", cfg, "meta").blocks[0].mixer.headdim == 16
    cfg.extra = {"mamba2": {"head_dim": 16}}
    with pytest.raises(ConfigError, match="model.extra.mamba2.head_dim is not an option of mamba2 \\(it reads "
                                          "chunk_size, d_state, headdim, ngroups\\)"):
        build_model("mamba2", cfg, "meta")


def test_options_for_a_model_that_reads_none_are_refused(capsys, tmp_path):
    """`model.extra={swat: {window: 8}}` trained swat at the preset's window, silently."""
    from harness import cli
    assert {name for name, spec in models().items() if spec.builtin and options_read(spec)} == {*FLA_MODELS, "mamba2"}
    code = cli.main(["train", "--model", "swat", "--device", "cpu", "--quiet", "--set",
                     "model.extra={swat: {window: 8}}", "--out", str(tmp_path / "run")])
    one_error_line(capsys.readouterr().err, "model.extra.swat.window is not an option of swat (swat reads no options "
                                            "there); window is a model field: --set model.window=")
    assert code == 2 and not (tmp_path / "run").exists()
    cfg = load_config("tiny").model
    cfg.extra = {"swat": {}, "gla": {"num_heads": 2}}  # nothing to ignore; another model's options
    build_model("swat", cfg, "meta")
    cfg.extra = {"mamba": {"d_conv": 2}}
    with pytest.raises(ConfigError, match="mamba reads no options there\\); options shared by all models are model "
                                          "fields"):
        build_model("mamba", cfg, "meta")
    cfg.extra = {"mamba": 3}
    with pytest.raises(ConfigError, match="model.extra.mamba must be a mapping"):
        build_model("mamba", cfg, "meta")


@pytest.mark.skipif(not HAS_FLA, reason="needs fla")
def test_deltanet_takes_the_recurrent_kernel_in_full_precision(monkeypatch):
    """fla's chunked delta-rule kernel asserts 16-bit inputs: an fp32 forward or prefill (no
    autocast) takes its fused recurrent kernel, bf16 or autocast the chunked one (the kernels run
    on the GPU)."""
    import baselines.fla_common as fla_common
    from baselines.deltanet import DeltaNetMixer
    monkeypatch.setattr(fla_common, "require_cuda", lambda x, model: None)
    mixer = next(m for m in build_model("deltanet", load_config("tiny").model).modules() if isinstance(m, DeltaNetMixer))
    modes = []
    monkeypatch.setattr(type(mixer.layer), "forward", lambda self, x, **kw: modes.append(self.mode) or (x, None, None))
    x = torch.randn(1, 80, mixer.layer.hidden_size)
    mixer.prefill(x.bfloat16())
    mixer.prefill(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixer(x)
    mixer(x)
    assert modes == ["chunk", "fused_recurrent", "chunk", "fused_recurrent"]


@pytest.mark.parametrize("hopper, triton_ok, dispatch_off, refused", [
    (True, False, True, True), (True, False, False, False), (True, True, True, False), (False, False, True, False)])
def test_gated_deltanet_stops_only_where_fla_would_still_refuse_its_backward(monkeypatch, hopper, triton_ok,
                                                                             dispatch_off, refused):
    """Where fla refuses its gated backward kernel (Hopper, Triton in [3.4, 3.7.1)) its backend
    dispatch runs a replacement; only with that dispatch off would fla raise inside the first
    backward (after minutes of autotuning), and the baseline says so in one line before any work."""
    if not HAS_FLA:
        pytest.skip("flash-linear-attention is not installed (pip install 'swat-harness[fla]')")
    import fla.backends
    import fla.utils

    from baselines.gated_deltanet import check_backward_kernel
    from harness.registry import KernelRefusedError
    monkeypatch.setattr(fla.utils, "IS_NVIDIA_HOPPER", hopper)
    monkeypatch.setattr(fla.utils, "TRITON_ABOVE_3_4_0", True)
    monkeypatch.setattr(fla.utils, "TRITON_ABOVE_3_7_1", triton_ok)
    monkeypatch.setattr(fla.backends, "_DISPATCH_DISABLED", dispatch_off)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    if refused:
        with pytest.raises(KernelRefusedError, match=r"FLA_DISABLE_BACKEND_DISPATCH=1.*fla issue #640.*unset"):
            check_backward_kernel(torch.device("cuda"))
    else:
        check_backward_kernel(torch.device("cuda"))
    check_backward_kernel(torch.device("cpu"))  # CPU inputs are the mixer's NeedsGPUError, not this


# ---------------------------------------------------------------- gated DeltaNet's torch chunk_bwd_dqkwg

BT_TEST = 16  # fla's chunk size is 64; 16 gives several chunks per short document


def dqkwg_inputs(docs, B, H, G, state_v_first, seed=0):
    """Random inputs of chunk_bwd_dqkwg in fp32: `docs` document lengths packed into one sequence
    (cu_seqlens), or B sequences of docs[0] tokens; g the chunk-local cumulative log2 gate."""
    gen = torch.Generator().manual_seed(seed)
    K, V, HV = 8, 12, H * G
    T = sum(docs) if B == 1 and len(docs) > 1 else docs[0]
    cu = torch.tensor([0, *torch.tensor(docs).cumsum(0).tolist()]) if len(docs) > 1 else None
    bounds = [(b, s, min(s + BT_TEST, e)) for b, (bos, e) in enumerate([(0, T)] * B) if cu is None
              for s in range(bos, e, BT_TEST)] if cu is None else \
        [(0, s, min(s + BT_TEST, int(e))) for bos, e in zip(cu[:-1].tolist(), cu[1:].tolist())
         for s in range(bos, e, BT_TEST)]
    log_gate = F.logsigmoid(torch.randn(B, T, HV, generator=gen) + 2) / math.log(2)
    g = torch.zeros(B, T, HV)
    for b, s, e in bounds:
        g[b, s:e] = log_gate[b, s:e].cumsum(0)
    state = (len(bounds), HV, V, K) if state_v_first else (len(bounds), HV, K, V)
    tensors = dict(q=(B, T, H, K), k=(B, T, H, K), v=(B, T, HV, V), do=(B, T, HV, V), dv=(B, T, HV, V),
                   w=(B, T, HV, K), h=state, dh=state)
    inputs = {name: torch.randn(*shape, generator=gen) for name, shape in tensors.items()}
    inputs["h"], inputs["dh"] = (inputs[n].view(1 if cu is not None else B, -1, *state[1:]) for n in ("h", "dh"))
    return dict(inputs, g=g, scale=0.3, state_v_first=state_v_first, cu_seqlens=cu, chunk_size=BT_TEST), bounds


def naive_dqkwg(q, k, v, do, h, dh, w, g, dv, scale, state_v_first, bounds, **_):
    """Autograd gradients of each chunk's local forward, in float64, given upstream do, dh, dv:
        o     = scale (exp2(g) q) h_c + scale causal(q k^T exp2(g_i - g_j)) v
        h_end = exp2(g_last) h_c + (k exp2(g_last - g))^T v
        v_new = u - w h_c
    with h_c the chunk's start state and dh the gradient of h_end. The gate is differentiated in
    natural-log units (g ln 2), the units of the gradient fla's kernel returns."""
    HV = v.shape[2]
    G = HV // q.shape[2]
    q, k, w = (x.double().requires_grad_() for x in (q, k, w))
    gn = (g.double() * math.log(2)).requires_grad_()
    v, do, dv = (x.double() for x in (v, do, dv))
    hs, dhs = (x.double().reshape(-1, HV, *x.shape[-2:]) for x in (h, dh))
    if state_v_first:
        hs, dhs = hs.mT, dhs.mT
    loss = 0
    for c, (b, s, e) in enumerate(bounds):
        qc, kc = (x[b, s:e].repeat_interleave(G, 1).transpose(0, 1) for x in (q, k))  # [HV, L, K]
        vc, doc, dvc, wc = (x[b, s:e].transpose(0, 1) for x in (v, do, dv, w))
        gc = gn[b, s:e].T  # [HV, L]
        causal = torch.tril(torch.ones(e - s, e - s, dtype=torch.bool))
        decay = torch.exp(torch.where(causal, gc[:, :, None] - gc[:, None, :], -torch.inf))
        o = scale * (torch.exp(gc)[..., None] * qc) @ hs[c] + scale * ((qc @ kc.mT) * decay) @ vc
        h_end = torch.exp(gc[:, -1])[:, None, None] * hs[c] + (kc * torch.exp(gc[:, -1:] - gc)[..., None]).mT @ vc
        v_new = torch.randn_like(vc) - wc @ hs[c]
        loss = loss + (o * doc).sum() + (h_end * dhs[c]).sum() + (v_new * dvc).sum()
    loss.backward()
    return q.grad, k.grad, w.grad, gn.grad


DQKWG_CASES = {"batch": ([37], 2, 2, 1, False), "packed": ([29, 41], 1, 2, 1, False),
               "gva": ([37], 2, 2, 2, False), "packed-gva-state_v_first": ([29, 41], 1, 1, 2, True)}


@pytest.mark.skipif(not HAS_FLA, reason="needs fla")
@pytest.mark.parametrize("case", DQKWG_CASES)
def test_torch_dqkwg_is_the_gradient_of_each_chunks_forward(case):
    """The torch chunk_bwd_dqkwg (fla's gated kernel, done in PyTorch where fla refuses it) against
    autograd through the naive per-chunk forward: documents not multiples of the chunk, GVA,
    both state layouts; dtypes and shapes as fla's wrapper returns them."""
    from baselines.fla_torch_backend import chunk_bwd_dqkwg_torch
    kwargs, bounds = dqkwg_inputs(*DQKWG_CASES[case])
    out = chunk_bwd_dqkwg_torch(**kwargs)
    ref = naive_dqkwg(**kwargs, bounds=bounds)
    assert [t.dtype for t in out] == [torch.float32] * 4
    for name, a, b in zip(("dq", "dk", "dw", "dg"), out, ref):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5 * b.abs().max().item(), msg=name)


@pytest.mark.skipif(not HAS_FLA, reason="needs fla")
@pytest.mark.skipif(CUDA, reason="fla's Triton kernel runs under the CPU interpreter here")
def test_torch_dqkwg_equals_flas_triton_kernel_under_the_interpreter(monkeypatch):
    """The same outputs as fla's own chunk_bwd_kernel_dqkwg, run by Triton's CPU interpreter (which
    has no Hopper miscompile), one launch configuration so that nothing is benchmarked."""
    import fla.ops.common.chunk_o as chunk_o

    from baselines.fla_torch_backend import chunk_bwd_dqkwg_torch
    autotuner = chunk_o.chunk_bwd_kernel_dqkwg.fn
    monkeypatch.setattr(autotuner, "configs", autotuner.configs[:1])
    kwargs, _ = dqkwg_inputs(*DQKWG_CASES["packed-gva-state_v_first"])
    for a, b in zip(chunk_bwd_dqkwg_torch(**kwargs), chunk_o.chunk_bwd_dqkwg(**kwargs)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


@pytest.mark.skipif(not HAS_FLA, reason="needs fla")
@pytest.mark.parametrize("hopper, triton_ok, tilelang, gated, runs", [
    (True, False, False, True, "torch"), (True, False, False, False, "triton"), (True, True, False, True, "triton"),
    (True, False, True, True, "tilelang"), (False, False, False, True, "triton")])
def test_fla_dispatches_dqkwg_to_the_torch_backend_exactly_where_it_refuses_its_kernel(
        monkeypatch, hopper, triton_ok, tilelang, gated, runs):
    """fla's own dispatched chunk_bwd_dqkwg, on a simulated GPU and software: the torch backend takes
    the gated call on Hopper with Triton in [3.4, 3.7.1) and no usable TileLang, and nothing else;
    fla's refusal is never reached."""
    import fla.ops.common.chunk_o as chunk_o
    import fla.utils

    from baselines.fla_torch_backend import CommonTileLangBackend, TorchDqkwgBackend
    for module in (fla.utils, chunk_o):
        monkeypatch.setattr(module, "IS_NVIDIA_HOPPER", hopper)
        monkeypatch.setattr(module, "TRITON_ABOVE_3_4_0", True)
        monkeypatch.setattr(module, "TRITON_ABOVE_3_7_1", triton_ok)
    ran = []

    class TritonLaunch:  # stands for the Triton kernel: chunk_bwd_kernel_dqkwg[grid](...)
        def __getitem__(self, grid):
            return lambda **kw: ran.append("triton")
    monkeypatch.setattr(chunk_o, "chunk_bwd_kernel_dqkwg", TritonLaunch())
    monkeypatch.setattr(CommonTileLangBackend, "is_available", classmethod(lambda cls: tilelang))
    monkeypatch.setattr(CommonTileLangBackend, "default_enable", True)
    monkeypatch.setattr(CommonTileLangBackend, "chunk_bwd_dqkwg", lambda self, *a, **kw: ran.append("tilelang"))
    torch_impl = TorchDqkwgBackend.chunk_bwd_dqkwg
    monkeypatch.setattr(TorchDqkwgBackend, "chunk_bwd_dqkwg",
                        lambda self, *a, **kw: ran.append("torch") or torch_impl(self, *a, **kw))
    kwargs, _ = dqkwg_inputs(*DQKWG_CASES["packed"])
    if not gated:
        kwargs["g"] = None
    chunk_o.chunk_bwd_dqkwg(**kwargs)
    assert ran == [runs]
    assert TorchDqkwgBackend.is_available() == (hopper and not triton_ok and not tilelang)


def test_fla_models_without_fla_name_the_extra(monkeypatch):
    import baselines.fla_common as common
    real = common.importlib.import_module

    def no_fla(name, *args):
        if name.startswith("fla"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args)
    monkeypatch.setattr(common.importlib, "import_module", no_fla)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fla" else find_spec(name, *a))
    for name in FLA_MODELS:
        with pytest.raises(MissingExtraError, match=r"pip install 'swat-harness\[fla\]'"):
            get_model(name).build(load_config("tiny").model)
        assert get_model(name).fast_path() == "no: pip install 'swat-harness[fla]'"


# ---------------------------------------------------------------- GPU: fast paths vs references

def gpu_cfg():
    """The small preset's widths (so that the Triton kernels compiled and tuned here serve the
    training test too), 2 layers, a short window that the test sequences pass."""
    return dataclasses.replace(load_config("small").model, vocab_size=512, num_layers=2, window=32)


def _first(out):
    """The output of an op that may also return its final state."""
    return out[0] if isinstance(out, tuple) else out


def _cast(inputs, dtype):
    """The floating-point inputs in dtype (the fast path's bf16, the reference's fp32), the rest as they are."""
    return [t.to(dtype) if t.is_floating_point() else t for t in inputs]


def _fwd_bwd(fn, inputs, grad_out_seed=1):
    """Output and input gradients of fn(*inputs) against a fixed random output gradient."""
    inputs = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = _first(fn(*inputs))
    g = torch.randn(out.shape, generator=torch.Generator(out.device).manual_seed(grad_out_seed),
                    device=out.device, dtype=torch.float32)
    (out.float() * g).sum().backward()
    return out.detach(), [t.grad for t in inputs if t.requires_grad]


def _check(name, fast, ref, inputs, tol=1e-2):
    """fast(bf16 inputs) vs ref(fp32 inputs): relative error of output and every input gradient."""
    out_f, grads_f = _fwd_bwd(fast, _cast(inputs, torch.bfloat16))
    out_r, grads_r = _fwd_bwd(ref, _cast(inputs, torch.float32))
    errs = [rel_err(out_f, out_r)] + [rel_err(a, b) for a, b in zip(grads_f, grads_r)]
    print(f"\nfast-vs-reference {name}: out {errs[0]:.2e}, grads " + " ".join(f"{e:.2e}" for e in errs[1:]))
    assert all(math.isfinite(e) and e < tol for e in errs), (name, errs)


# heads, key and value head dims of each op in the small preset's models (gla, retnet, deltanet,
# gated_deltanet; hgrn2 runs gla's kernels)
FLA_OP_SHAPES = {"gla": (4, 64, 128), "retention": (2, 256, 512), "delta_rule": (4, 128, 128),
                 "gated_delta_rule": (2, 256, 512)}


def _fla_ops(name, dev="cuda"):
    B, T = 2, 200
    H, K, V = FLA_OP_SHAPES[name]
    q, k, v = torch.randn(B, T, H, K, device=dev), torch.randn(B, T, H, K, device=dev), torch.randn(B, T, H, V, device=dev)
    if name == "gla":
        from fla.ops.gla import chunk_gla
        from fla.ops.gla.naive import naive_recurrent_gla
        g = F.logsigmoid(torch.randn(B, T, H, K, device=dev)) / 16
        return chunk_gla, naive_recurrent_gla, [q, k, v, g]
    if name == "retention":
        from fla.ops.retention import chunk_retention
        from fla.ops.retention.naive import naive_retention

        def naive(q, k, v):
            return naive_retention(*(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
        return chunk_retention, naive, [q, k, v]
    beta = torch.rand(B, T, H, device=dev)
    qn, kn = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    if name == "delta_rule":
        from fla.ops.delta_rule import chunk_delta_rule
        from fla.ops.delta_rule.naive import delta_rule_recurrence

        def naive(q, k, v, beta):
            o, _ = delta_rule_recurrence(*(t.transpose(1, 2) for t in (q, k, v, beta)))
            return o.transpose(1, 2)
        return chunk_delta_rule, naive, [qn, kn, v, beta]
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule

    import baselines.fla_torch_backend  # noqa: F401  (registered, as the model registers it: where fla refuses its kernel)
    g = F.logsigmoid(torch.randn(B, T, H, device=dev) + 3)

    def naive(q, k, v, g, beta):  # the naive twin takes beta before g
        return naive_recurrent_gated_delta_rule(q, k, v, beta, g)[0]
    return chunk_gated_delta_rule, naive, [qn, kn, v, g, beta]


@gpu
@pytest.mark.skipif(not HAS_FLA, reason="needs fla")
@pytest.mark.parametrize("op", ["gla", "retention", "delta_rule", "gated_delta_rule"])
def test_gpu_fla_chunk_kernels_match_naive_recurrences(op):
    torch.manual_seed(0)
    fast, ref, inputs = _fla_ops(op)
    _check(op, fast, ref, inputs, tol=2e-2)  # gate gradients sum over the sequence: bf16 loses more


@gpu
@pytest.mark.skipif(not HAS_FLA, reason="needs fla")
@pytest.mark.parametrize("packed", [False, True])
def test_gpu_gated_delta_rule_on_the_torch_dqkwg_matches_the_naive_recurrence(packed, monkeypatch):
    """fla's chunked gated delta rule, forward and backward in bf16, with chunk_bwd_dqkwg on the
    torch backend (put first here, so that this runs on any GPU; on Hopper with Triton in
    [3.4, 3.7.1) fla picks it by itself), in the layer's state layout (state_v_first), against
    fla's naive recurrence in fp32; packed: documents of 90 and 110 tokens, each its own recurrence."""
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule

    from baselines.fla_torch_backend import TorchDqkwgBackend
    ran = []
    torch_impl = TorchDqkwgBackend.chunk_bwd_dqkwg
    monkeypatch.setattr(TorchDqkwgBackend, "is_available", classmethod(lambda cls: True))
    monkeypatch.setattr(TorchDqkwgBackend, "priority", 0)
    monkeypatch.setattr(TorchDqkwgBackend, "chunk_bwd_dqkwg",
                        lambda self, *a, **kw: ran.append(1) or torch_impl(self, *a, **kw))
    torch.manual_seed(0)
    _, _, inputs = _fla_ops("gated_delta_rule")
    cu = None
    if packed:
        inputs = [t.reshape(1, -1, *t.shape[2:])[:, :200] for t in inputs]
        cu = torch.tensor([0, 90, 200], dtype=torch.long, device="cuda")
    bounds = [(0, inputs[0].shape[1])] if cu is None else list(zip(cu[:-1].tolist(), cu[1:].tolist()))

    def fast(q, k, v, g, beta):
        return chunk_gated_delta_rule(q, k, v, g, beta, state_v_first=True, cu_seqlens=cu)[0]

    def ref(q, k, v, g, beta):
        return torch.cat([naive_recurrent_gated_delta_rule(*(t[:, s:e] for t in (q, k, v, beta, g)))[0]
                          for s, e in bounds], 1)
    out_f, grads_f = _fwd_bwd(fast, _cast(inputs, torch.bfloat16))
    out_r, grads_r = _fwd_bwd(ref, _cast(inputs, torch.float32))
    errs = dict(zip(["out", "dq", "dk", "dv", "dg", "dbeta"],
                    [rel_err(out_f, out_r)] + [rel_err(a, b) for a, b in zip(grads_f, grads_r)]))
    print(f"\ngated delta rule on the torch dqkwg (bf16 vs fp32 naive, packed={packed}): "
          + " ".join(f"{n} {e:.2e}" for n, e in errs.items()))
    assert ran, "fla did not dispatch chunk_bwd_dqkwg to the torch backend"
    # the gate's gradient is a reverse cumulative sum over each chunk: bf16 loses more there
    assert all(math.isfinite(e) and e < (2e-2 if n == "dg" else 1e-2) for n, e in errs.items()), errs


@gpu
@pytest.mark.skipif(not HAS_FLA, reason="needs fla")
def test_gpu_gated_deltanet_model_trains_on_this_gpu(monkeypatch):
    """The whole model, packed documents, bf16 autocast, fla's in-kernel gate: 30 AdamW steps on
    one batch lower its loss by more than 1, every gradient finite; where fla refuses its gated kernel
    (Hopper, Triton in [3.4, 3.7.1), no TileLang), the torch backend computed chunk_bwd_dqkwg."""
    from baselines.fla_torch_backend import TorchDqkwgBackend
    ran = []
    torch_impl = TorchDqkwgBackend.chunk_bwd_dqkwg
    monkeypatch.setattr(TorchDqkwgBackend, "chunk_bwd_dqkwg",
                        lambda self, *a, **kw: ran.append(1) or torch_impl(self, *a, **kw))
    torch.manual_seed(0)
    cfg = gpu_cfg()
    model = build_model("gated_deltanet", cfg, "cuda")
    ids = torch.randint(0, cfg.vocab_size, (1, 301), device="cuda")
    cu = torch.tensor([0, 130, 300], dtype=torch.int32, device="cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(ids[:, :-1], cu_seqlens=cu)
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[0, 1:])
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    print(f"\ngated_deltanet: loss {losses[0]:.3f} -> {losses[-1]:.3f} in 30 steps, "
          f"torch dqkwg calls {len(ran)} (the torch backend is available here: {TorchDqkwgBackend.is_available()})")
    assert losses[-1] < losses[0] - 1.0
    assert bool(ran) == TorchDqkwgBackend.is_available()


@gpu
@pytest.mark.parametrize("window,docs", [(None, False), (None, True), (64, False), (64, True)])
def test_gpu_softmax_attention_matches_reference(window, docs):
    torch.manual_seed(0)
    T, H, d = 300, 4, 64
    q, k, v = (torch.randn(1, T, H, d, device="cuda") for _ in range(3))
    cu = torch.tensor([0, 70, 211, T], dtype=torch.int32, device="cuda") if docs else None
    slopes = torch.zeros(H, device="cuda")
    _check(f"softmax_attention window={window} docs={docs}", lambda q, k, v: softmax_attention(q, k, v, window, cu),
           lambda q, k, v: swat_attention_ref(q, k, v, slopes, window or T, activation="softmax", cu_seqlens=cu),
           [q, k, v])


@gpu
def test_gpu_softmax_attention_over_documents_compiles_to_one_graph():
    """In a compiled layer (train.compile) softmax attention over packed documents, on torch's
    varlen kernel, is one graph: fullgraph=True raises at a graph break, such as the failed
    flash-attn import that once split every compiled Transformer layer in two."""
    torch.manual_seed(0)
    T, H, d = 300, 4, 64
    q, k, v = (torch.randn(1, T, H, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    cu = torch.tensor([0, 70, 211, T], dtype=torch.int32, device="cuda")
    compiled = torch.compile(softmax_attention, fullgraph=True)
    assert rel_err(compiled(q, k, v, None, cu), softmax_attention(q, k, v, None, cu)) < 1e-2


@gpu
@pytest.mark.skipif(importlib.util.find_spec("mamba_ssm") is None, reason="needs mamba-ssm")
def test_gpu_mamba_selective_scan_kernel_matches_reference():
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    from baselines.mamba import selective_scan_ref
    torch.manual_seed(0)
    b, d, n, L = 2, 128, 16, 300
    dev = "cuda"
    u, delta, z = (torch.randn(b, d, L, device=dev) for _ in range(3))
    A = -torch.rand(d, n, device=dev) * 4
    B, C = torch.randn(b, n, L, device=dev), torch.randn(b, n, L, device=dev)
    D, bias = torch.randn(d, device=dev), torch.randn(d, device=dev) - 3

    def run(fn):
        return lambda u, delta, B, C, z: fn(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True)
    _check("mamba selective scan", run(selective_scan_fn), run(selective_scan_ref), [u, delta, B, C, z])


@gpu
@pytest.mark.skipif(importlib.util.find_spec("mamba_ssm") is None, reason="needs mamba-ssm")
def test_gpu_mamba2_ssd_kernel_matches_reference():
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    torch.manual_seed(0)
    b, L, h, p, n = 2, 300, 8, 64, 128
    dev = "cuda"
    x, dt = torch.randn(b, L, h, p, device=dev), torch.randn(b, L, h, device=dev) - 2
    B, C = torch.randn(b, L, 1, n, device=dev), torch.randn(b, L, 1, n, device=dev)
    A, D, bias = -torch.rand(h, device=dev) * 8 - 1, torch.randn(h, device=dev), torch.randn(h, device=dev)

    def fast(x, dt, B, C):
        return mamba_chunk_scan_combined(x, dt, A, B, C, 256, D=D, dt_bias=bias, dt_softplus=True)

    def ref(x, dt, B, C):
        return ssd_ref(x, F.softplus(dt.float() + bias), A, B, C, D)[0]
    _check("mamba2 SSD", fast, ref, [x, dt, B, C])


@gpu
@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_gpu_mamba_models_fast_path_matches_their_reference(name, monkeypatch):
    """Whole model in bf16 on the kernels vs the same weights in fp32 on the pure-torch reference."""
    module = importlib.import_module(f"baselines.{name}")
    torch.manual_seed(0)
    model = build_model(name, gpu_cfg(), "cuda")
    ids = torch.randint(0, 512, (2, 200), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fast = model(ids).float()
    monkeypatch.setattr(module, "_fast_scan" if name == "mamba" else "_fast_ssd", lambda: None)
    ref = model(ids).float()
    err = rel_err(fast, ref)
    print(f"\nfast-vs-reference {name} model logits (bf16 autocast vs fp32 reference): {err:.2e}")
    assert err < 2e-2


@gpu
@pytest.mark.parametrize("name", ALL_MODELS)
def test_gpu_step_and_prefill_equal_the_full_forward(name):
    if name in FLA_MODELS and not HAS_FLA:
        pytest.skip("needs fla")
    torch.manual_seed(0)
    cfg = gpu_cfg()
    model = build_model(name, cfg, "cuda").eval()
    T = 80  # > 64: fla's layers take their chunked kernels for the full forward
    ids = torch.randint(0, cfg.vocab_size, (2, T), device="cuda")
    with torch.no_grad():
        full = model(ids)
        logits, state = model.prefill(ids[:, :T - 8])
        steps = []
        for t in range(T - 8, T):
            step_logits, state = model.step(ids[:, t], state)
            steps.append(step_logits)
    errs = rel_err(logits, full[:, :T - 8]), rel_err(torch.stack(steps, 1), full[:, T - 8:])
    print(f"\nstep-vs-forward {name} (fp32): prefill {errs[0]:.2e}, steps {errs[1]:.2e}")
    assert max(errs) < 5e-3, errs  # Triton's fp32 dots run in tf32


@gpu
@pytest.mark.skipif(not HAS_FLA, reason="needs fla")
@pytest.mark.parametrize("name", FLA_MODELS + ["transformer", "sliding_softmax"])
def test_gpu_packed_documents_equal_separate_sequences(name):
    torch.manual_seed(0)
    cfg = gpu_cfg()
    model = build_model(name, cfg, "cuda").eval()
    docs = [torch.randint(0, cfg.vocab_size, (1, n), device="cuda") for n in (90, 70)]
    cu = torch.tensor([0, 90, 160], dtype=torch.int32, device="cuda")
    with torch.no_grad():
        packed = model(torch.cat(docs, 1), cu_seqlens=cu)
        separate = torch.cat([model(d) for d in docs], 1)
    err = rel_err(packed, separate)
    print(f"\npacked-vs-separate {name} (fp32): {err:.2e}")
    assert err < 5e-3


# ---------------------------------------------------------------- GPU: training reduces the loss

TRAIN_STEPS = int(os.environ.get("HARNESS_TRAIN_STEPS", "0"))


@gpu
@pytest.mark.skipif(TRAIN_STEPS <= 0, reason="set HARNESS_TRAIN_STEPS to train each model at the small preset")
@pytest.mark.parametrize("name", ALL_MODELS)
def test_gpu_small_preset_training_reduces_the_loss(name, tmp_path):
    """The small preset's model on the bundled corpus (bytes), short sequences: the loss falls."""
    if name in FLA_MODELS and not HAS_FLA:
        pytest.skip("needs fla")
    from harness.training.train import train
    seq, micro = 256, 16
    cfg = load_config("small", overrides=[
        f"train.seq_len={seq}", f"train.batch_tokens={seq * micro}", f"train.micro_batch={micro}",
        f"train.tokens={seq * micro * TRAIN_STEPS}", f"train.warmup_tokens={seq * micro * TRAIN_STEPS // 10}",
        "train.corpus=bundled", "train.tokenizer=bytes", f"train.eval_tokens={seq * 64}",
        f"train.save_every={TRAIN_STEPS}"])
    losses = []
    result = train(name, cfg, tmp_path / name, "cuda", on_step=lambda info: losses.append(info["loss"]))
    first, last = losses[0], sum(losses[-10:]) / len(losses[-10:])
    print(f"\ntraining {name}: {result.params:,} params, {len(losses)} steps of {seq * micro} tokens, "
          f"loss {first:.3f} -> {last:.3f} (mean of last 10), held-out {result.heldout_loss:.3f}, "
          f"{result.seconds:.1f}s")
    assert last < first - 1.0


def test_list_counts_parameters_at_a_config_file(tmp_path, capsys):
    """`harness list` took --preset and --set but not --config, the third way every other command
    takes a config: a model's count at a config file could not be looked up."""
    config = tmp_path / "wide.yaml"
    config.write_text("model: {hidden_size: 96}\n")
    at_file, _ = list_lines(["--config", str(config)], capsys)
    at_set, _ = list_lines(["--set", "model.hidden_size=96"], capsys)
    plain, _ = list_lines([], capsys)
    assert at_file == at_set and at_file["swat"] != plain["swat"]

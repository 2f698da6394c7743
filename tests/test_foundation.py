"""Foundation: registry, config validation, the SWAT definition, the model contract, the CLI."""

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch

from harness.config import ConfigError, load_config
from harness.model.build import build_model, matched_config, params_of
from harness.ops.alibi import alibi_slopes
from harness.ops.swat.reference import swat_attention_ref, swat_decode_ref
from harness.registry import (
    RegistryError,
    expand_tasks,
    get_model,
    load_plugin_file,
    models,
)

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- registry

def test_unknown_model_names_known_ones_and_suggests():
    with pytest.raises(RegistryError) as err:
        get_model("swatt")
    assert "Did you mean 'swat'" in str(err.value)
    assert "transformer" in str(err.value)


def test_plugin_file_registers_its_model():
    load_plugin_file(ROOT / "examples" / "plugin_model.py")
    assert "gru" in models()
    assert get_model("gru").family == "recurrent"


def test_missing_or_broken_plugin_file_is_one_error(tmp_path):
    with pytest.raises(RegistryError, match="not found"):
        load_plugin_file(tmp_path / "nope.py")
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_module_anywhere\n")
    with pytest.raises(RegistryError, match="failed to import"):
        load_plugin_file(broken)


def test_entry_point_plugins_are_discovered(monkeypatch, tmp_path):
    import harness.registry as reg
    plugin = tmp_path / "ep_plugin_mod.py"
    plugin.write_text(textwrap.dedent("""
        from harness import register_model
        from harness.backbone import DecoderLM
        from harness.model.attention import CausalAttention
        @register_model("ep_model", family="attention")
        def build(cfg):
            return DecoderLM(cfg, lambda cfg, i: CausalAttention(cfg))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))

    class EP:
        name, value = "ep_model", "ep_plugin_mod"

        def load(self):
            return __import__("ep_plugin_mod")

    monkeypatch.setattr(reg, "entry_points", lambda group: [EP()] if group == "harness.models" else [])
    monkeypatch.setattr(reg._REG, "loaded", False)
    reg.load_plugins()
    assert "ep_model" in reg.models()


def test_task_groups_expand():
    assert expand_tasks(["smoke"]) == ["smoke"]
    with pytest.raises(RegistryError, match="unknown task"):
        expand_tasks(["nonsense"])


# ---------------------------------------------------------------- config

@pytest.mark.parametrize("override, key", [
    ("model.window=-4", "model.window"),
    ("model.num_heads=5", "model.num_heads"),
    ("model.windw=4", "model.windw"),
    ("model.rope=maybe", "model.rope"),
    ("train.lr=fast", "train.lr"),
    ("train.batch_tokens=1000", "train.batch_tokens"),
    ("model.slopes=[1, 2]", "model.slopes"),
])
def test_invalid_overrides_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", None, [override])
    assert key in str(err.value)
    assert "\n" not in str(err.value)


def test_scientific_notation_overrides():
    cfg = load_config("tiny", None, ["train.lr=1e-3", "model.sigmoid_bias=-2.5e0", "train.tokens=2048"])
    assert (cfg.train.lr, cfg.model.sigmoid_bias, cfg.train.tokens) == (1e-3, -2.5, 2048)


def test_an_explicit_slope_list_from_the_command_line():
    """model.slopes is a name or a list; README documents `--set model.slopes=[...]`."""
    cfg = load_config("tiny", None, ["model.slopes=[0.5, 0.25, -0.5, -0.25]"])
    assert list(cfg.model.slopes) == [0.5, 0.25, -0.5, -0.25]
    assert load_config("tiny", None, ["model.slopes=negative"]).model.slopes == "negative"


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError, match="did you mean model.window"):
        load_config("tiny", None, ["model.windw=4"])


def test_numbers_read_as_written_not_as_yaml_1_1(tmp_path):
    """PyYAML (YAML 1.1) read 064 as octal 52, 1:30 as 90 (base 60), and 1e-3 in a list as the string '1e-3'."""
    cfg = load_config("tiny", None, ["model.window=064", "train.seed=010", "model.slopes=[1e-3, -1e-3, 5e-1, -5e-1]",
                                     "train.betas=[9e-1, 0.95]", "train.tokens=1_024", "model.num_kv_heads=0x2"])
    assert (cfg.model.window, cfg.train.seed, cfg.train.tokens, cfg.model.num_kv_heads) == (64, 10, 1024, 2)
    assert (list(cfg.model.slopes), cfg.train.betas) == ([1e-3, -1e-3, 0.5, -0.5], (0.9, 0.95))
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  window: 040\ntrain:\n  lr: 1e-3\n")
    assert (load_config("tiny", f).model.window, load_config("tiny", f).train.lr) == (40, 1e-3)
    with pytest.raises(ConfigError, match="train.lr must be a number, got '1:30'"):
        load_config("tiny", None, ["train.lr=1:30"])


def test_a_key_in_the_wrong_place_names_where_it_goes(tmp_path):
    """model.extra's inner keys dotted, or a model key at a config file's top level: the error named no fix."""
    with pytest.raises(ConfigError, match=r"set model.extra whole, as YAML: --set 'model.extra=\{full_every: ...\}'"):
        load_config("tiny", None, ["model.extra.full_every=1"])
    nested = r"--set 'model.extra=\{mamba2: \{ngroups: ...\}\}'"  # a model's options nest one level deeper
    with pytest.raises(ConfigError, match=nested):
        load_config("tiny", None, ["model.extra.mamba2.ngroups=2"])
    f = tmp_path / "c.yaml"
    f.write_text("window: 16\n")
    with pytest.raises(ConfigError, match=r"unknown config section 'window'; .* \(window belongs under model:\)"):
        load_config("tiny", f)


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  window: 16\n  slopes: negative\ntrain:\n  lr: 0.001\n")
    cfg = load_config("tiny", f, ["model.window=8"])
    assert (cfg.model.window, cfg.model.slopes, cfg.train.lr) == (8, "negative", 0.001)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2]\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config("tiny", bad)
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("huge")
    with pytest.raises(ConfigError, match="config file is an empty name"):  # `--config ''` said ". not found"
        load_config("tiny", "")



@pytest.mark.parametrize("overrides", [["model.expand=1e308"], ["model.expand=1e18"],
                                       ["model.hidden_size=4" + "0" * 21, "model.num_heads=4"]])
def test_an_inner_size_beyond_range_is_one_error_not_an_overflow(overrides):
    """expand x hidden_size (when d_inner is unset) is checked in validate: int() of an infinite or
    out-of-range product raised OverflowError mid-build (`harness list`, `train`)."""
    with pytest.raises(ConfigError, match=r"model.expand=.* x model.hidden_size=.* is out of range") as err:
        load_config("tiny", None, overrides)
    assert "\n" not in str(err.value)
    assert load_config("tiny", None, ["model.expand=1e308", "model.d_inner=64"]).model.inner_size == 64


def test_the_mlp_width_is_computed_in_integers():
    """ffn_hidden is 8/3 x hidden rounded up to 64, in integer arithmetic (a float quotient of a huge
    size overflows), and as before at every size a model has."""
    cfg = load_config("tiny").model
    for hidden in [64, 100, 512, 1024, 1536, 2048, 4096, 12288, 10 ** 15 + 7]:
        cfg.hidden_size = hidden
        assert cfg.ffn_hidden == (int(8 * hidden / 3) + 63) // 64 * 64, hidden
    cfg.hidden_size = 10 ** 400
    assert cfg.ffn_hidden % 64 == 0


def test_a_key_given_twice_in_yaml_is_refused(tmp_path):
    """PyYAML keeps the last of two equal keys silently: `window: 16` ... `window: 8` trained at 8."""
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  window: 16\n  slopes: negative\n  window: 8\n")
    with pytest.raises(ConfigError, match=f"config file {f} is not valid YAML: duplicate key 'window' at line 4"):
        load_config("tiny", f)
    with pytest.raises(ConfigError, match="model.extra: cannot parse .* \\(duplicate key 'a'\\)"):
        load_config("tiny", None, ["model.extra={swat_x: {a: 1, a: 2}}"])
    f.write_text("model:\n  window: 16\ntrain:\n  lr: 0.001\n")  # the same key in two sections is fine
    assert load_config("tiny", f).model.window == 16
    f.write_text("base: &b {window: 16, rope: true}\nmodel:\n  <<: *b\n  window: 8\n")  # a merge key overridden
    from harness.config import load_yaml
    assert load_yaml(f.read_text())["model"] == {"window": 8, "rope": True}


# ---------------------------------------------------------------- the SWAT definition

def dense_swat(q, k, v, slopes, window, bias=0.0, doc=None):
    """SWAT written as explicit loops over query and key, independently of the reference."""
    B, T, H, d = q.shape
    rep = H // k.shape[2]
    out = torch.zeros(B, T, H, d, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                for j in range(max(0, i - window + 1), i + 1):
                    if doc is not None and doc[i] != doc[j]:
                        continue
                    s = float(q[b, i, h].double() @ k[b, j, h // rep].double()) / math.sqrt(d)
                    s += float(slopes[h]) * (i - j) + bias
                    out[b, i, h] += v[b, j, h // rep].double() / (1 + math.exp(-s))
    return out


@pytest.mark.parametrize("T, W", [(7, 3), (5, 8), (9, 1), (11, 11), (13, 4)])
def test_reference_matches_loops(T, W):
    g = torch.Generator().manual_seed(T * 31 + W)
    q, k, v = (torch.randn(2, T, 4, 8, generator=g) for _ in range(3))
    slopes = alibi_slopes(4, "balanced")
    ref = swat_attention_ref(q, k, v, slopes, W, sigmoid_bias=-0.5)
    torch.testing.assert_close(ref.double(), dense_swat(q, k, v, slopes, W, bias=-0.5), atol=1e-5, rtol=1e-5)


def test_reference_gqa_and_documents():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 10, 4, 8, generator=g)
    k, v = (torch.randn(1, 10, 2, 8, generator=g) for _ in range(2))
    slopes = alibi_slopes(4, "negative")
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    doc = [0] * 4 + [1] * 6
    ref = swat_attention_ref(q, k, v, slopes, 5, cu_seqlens=cu)
    torch.testing.assert_close(ref.double(), dense_swat(q, k, v, slopes, 5, doc=doc), atol=1e-5, rtol=1e-5)


def test_softmax_variant_is_banded_softmax_attention():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 9, 2, 8, generator=g) for _ in range(3))
    ref = swat_attention_ref(q, k, v, torch.zeros(2), 4, activation="softmax")
    i = torch.arange(9)
    mask = (i[:, None] - i[None, :] >= 0) & (i[:, None] - i[None, :] < 4)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                            v.transpose(1, 2), attn_mask=mask)
    torch.testing.assert_close(ref, sdpa.transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_decode_ring_buffer_matches_full_attention():
    g = torch.Generator().manual_seed(2)
    T, W = 12, 5
    q, k, v = (torch.randn(1, T, 2, 8, generator=g) for _ in range(3))
    slopes = alibi_slopes(2, "balanced")
    full = swat_attention_ref(q, k, v, slopes, W)
    kc, vc = torch.zeros(1, W, 2, 8), torch.zeros(1, W, 2, 8)
    for pos in range(T):
        kc[:, pos % W], vc[:, pos % W] = k[:, pos], v[:, pos]
        out = swat_decode_ref(q[:, pos], kc, vc, min(pos + 1, W), pos, slopes, W)
        torch.testing.assert_close(out, full[:, pos], atol=1e-5, rtol=1e-5)


def test_balanced_slopes_follow_the_paper():
    """The paper's Eq. 4: -2^(-k) for H/2 heads, +2^(-k) for the other H/2, k = 1..H/2; ALiBi's
    geometric 2^(-8k/n) on request; the two agree at 16 heads (the paper's 340M model)."""
    s = alibi_slopes(8, "balanced")
    assert s.tolist() == [-0.5, -0.25, -0.125, -0.0625, 0.5, 0.25, 0.125, 0.0625]
    assert alibi_slopes(4, "negative").tolist() == [-0.5, -0.25, -0.125, -0.0625]
    geometric = alibi_slopes(8, "balanced", "alibi")
    assert torch.allclose(geometric[4:], torch.tensor([2 ** (-8 * k / 4) for k in range(1, 5)]))
    assert torch.equal(alibi_slopes(16, "balanced"), alibi_slopes(16, "balanced", "alibi"))
    assert load_config("tiny").model.slope_form == "paper"
    with pytest.raises(ConfigError, match="slope_form must be paper or alibi"):
        load_config("tiny", overrides=["model.slope_form=geometric"])


# ---------------------------------------------------------------- every model's contract

def neural(spec) -> bool:
    """Not one of the n-gram reference models: those are fitted by counting, have no parameters to
    match and are uniform until fitted; tests/test_ngram.py checks their contract on fitted models."""
    return spec.family != "n-gram"


def cpu_models():
    """Registered neural models that run on this machine (GPU-only ones are tested on the device)."""
    return [name for name, spec in sorted(models().items())
            if neural(spec) and (not spec.gpu_only or spec.fast_path() == "yes")]


CPU_MODELS = cpu_models()


@pytest.mark.parametrize("name", CPU_MODELS)
def test_future_tokens_never_change_past_logits(name):
    cfg = load_config("tiny").model
    torch.manual_seed(0)
    model = build_model(name, cfg).eval()
    x = torch.randint(0, cfg.vocab_size, (2, 40))
    y = x.clone()
    y[:, 25:] = torch.randint(0, cfg.vocab_size, (2, 15))
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :25], b[:, :25], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[:, 25:], b[:, 25:])


@pytest.mark.parametrize("name", CPU_MODELS)
def test_step_and_prefill_equal_the_full_forward(name):
    cfg = load_config("tiny").model  # window 32 < 45 tokens: the ring buffer wraps
    torch.manual_seed(0)
    model = build_model(name, cfg).eval()
    x = torch.randint(0, cfg.vocab_size, (2, 45))
    with torch.no_grad():
        full = model(x)
        state = model.init_state(2)
        stepped = []
        for t in range(45):
            logits, state = model.step(x[:, t], state)
            stepped.append(logits)
        prefill_logits, state = model.prefill(x[:, :30])
        after = [model.step(x[:, t], state) for t in range(30, 31)][0][0]
    torch.testing.assert_close(torch.stack(stepped, 1), full, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(prefill_logits, full[:, :30], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(after, full[:, 30], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", CPU_MODELS)
def test_greedy_generate_is_argmax_of_the_forward(name):
    cfg = load_config("tiny").model
    torch.manual_seed(0)
    model = build_model(name, cfg).eval()
    prompt = torch.randint(0, cfg.vocab_size, (2, 6))
    new = model.generate(prompt, 5)
    seq = prompt
    for _ in range(5):
        with torch.no_grad():
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(new, seq[:, 6:])


@pytest.mark.parametrize("preset", ["tiny", "small", "340m", "760m"])
def test_parameter_counts_match_within_two_percent(preset):
    cfg = load_config(preset).model
    reference = params_of("transformer", cfg)
    for name in [name for name, spec in models().items() if neural(spec)]:
        try:
            count = params_of(name, matched_config(name, cfg))
        except ImportError:
            continue  # an optional package is needed to build it; counted where installed
        assert abs(count - reference) / reference < 0.02, (name, preset, count, reference)


# ---------------------------------------------------------------- the CLI, end to end

def harness(*args, cwd):
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_cli_run_end_to_end_then_reuse(tmp_path):
    out = harness("run", "--models", "swat,transformer", "--tasks", "smoke", "--preset", "tiny",
                  "--set", "train.tokens=8192", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run = tmp_path / "results" / "tiny"
    rows = [json.loads(line) for line in (run / "rows.jsonl").read_text().splitlines()]
    assert {(r["model"], r["metric"]) for r in rows} == {(m, k) for m in ("swat", "transformer")
                                                         for k in ("loss", "ppl")}
    assert all(r["command"].startswith("harness run") or "-m harness" in r["command"] or "run" in r["command"]
               for r in rows)
    assert all(math.isfinite(r["value"]) and r["value"] > 0 for r in rows)
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["model"]["window"] == 32 and "torch" in info["versions"]
    assert "| swat |" in (run / "table.md").read_text()
    for model in ("swat", "transformer"):  # training records kept beside the rows, for committing
        meta = json.loads((run / "train" / f"{model}_meta.json").read_text())
        steps = [json.loads(line) for line in (run / "train" / f"{model}_train_log.jsonl").read_text().splitlines()]
        assert meta["tokens"] == 8192 and steps[-1]["tokens"] == 8192 and "loss" in steps[-1]
    from harness.evaluation.sources import kept_logs
    from harness.results.plots import write_plots
    written = write_plots([], tmp_path / "plots", {}, kept_logs([run]))
    assert {p.name for p in written} == {"loss_curves.png", "loss_curves.csv"}
    curves = (tmp_path / "plots" / "loss_curves.csv").read_text().splitlines()
    assert curves[0] == "run,model,tokens,loss" and {line.split(",")[1] for line in curves[1:]} == {"swat", "transformer"}
    assert (tmp_path / "plots" / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    again = harness("run", "--models", "swat", "--tasks", "smoke", "--preset", "tiny",
                    "--set", "train.tokens=8192", cwd=tmp_path)
    assert again.returncode == 0 and "all tasks done already" in again.stdout
    before = (run / "rows.jsonl").read_text()
    clash = harness("run", "--models", "swat", "--tasks", "smoke", "--preset", "tiny",
                    "--set", "train.tokens=16384", "--force", cwd=tmp_path)
    # run.json keeps one config, which tables give every model of the run: transformer's rows are of 8192 tokens
    assert clash.returncode == 2 and "holds rows of transformer trained with another config" in clash.stderr
    assert "--run NEW_NAME" in clash.stderr and (run / "rows.jsonl").read_text() == before


def test_cli_plugin_example_runs(tmp_path):
    out = harness("run", "--plugin", str(ROOT / "examples" / "plugin_model.py"), "--models", "gru",
                  "--tasks", "smoke", "--preset", "tiny", "--set", "train.tokens=4096", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "gru" in (tmp_path / "results" / "tiny" / "rows.jsonl").read_text()


@pytest.mark.parametrize("args, message", [
    (["run", "--models", "swatt"], "Did you mean 'swat'"),
    (["run", "--models", "swat", "--set", "model.window=-1"], "model.window must be positive"),
    (["run", "--models", "swat", "--set", "train.corpus=/nonexistent/corpus"], "not found"),
    (["run", "--models", "swat", "--tasks", "smok"], "Did you mean 'smoke'"),
    (["run", "--models", "swat", "--plugin", "missing.py"], "plugin file missing.py not found"),
    (["run", "--models", "swat", "--config", "missing.yaml"], "config file missing.yaml not found"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, message):
    out = harness(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results" / "tiny" / "rows.jsonl").exists()

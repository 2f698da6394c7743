"""Attention output RMS per head at initialisation, for the study's size `s` (REPORT.md, "why it
trails"): `python results/scaling/init_rms.py > results/scaling/init_rms.md` on any machine (CPU).

The output of each layer's attention core (the input of its output projection) on the first four
1024-token sequences of the training stream, models built with seed 0."""

import sys

import torch

from harness.data.streams import prepare_streams
from harness.data.tokenizer import get_tokenizer
from harness.model.build import build_model
from harness.study.spec import load_study

MODELS = ("swat", "swat_logw", "swat_onorm", "swat_official", "sliding_softmax", "transformer")

study = load_study(sys.argv[1] if len(sys.argv) > 1 else "results/scaling/study.yaml")
cfg = study.config("s", 0)
stream, _ = prepare_streams(cfg.train.corpus, get_tokenizer(cfg.train.tokenizer))
T, H = cfg.train.seq_len, cfg.model.num_heads
x = torch.from_numpy(stream.tokens[:4 * T].astype("int64")).view(4, T)
print(f"Attention output RMS per head at initialisation, size s ({cfg.model.hidden_size} hidden, {H} heads "
      f"of {cfg.model.head_dim}, window {cfg.model.window}), first 4 x {T} training tokens, seed 0.\n")
print("| model | slopes | " + " | ".join(f"layer {i} (heads 0..{H - 1})" for i in range(cfg.model.num_layers)) + " |")
print("|---|---|" + "---|" * cfg.model.num_layers)
for name in MODELS:
    torch.manual_seed(0)
    model = build_model(name, cfg.model, "cpu").eval()
    per_layer = []
    for block in model.blocks:
        block.mixer.o_proj.register_forward_hook(
            lambda mod, args, out: per_layer.append(args[0].float().view(4, T, H, -1).pow(2).mean((0, 1, 3)).sqrt()))
    with torch.no_grad():
        model(x)
    mixer = model.blocks[0].mixer  # the softmax layers have no slopes: +0 for each head
    slopes = ", ".join(f"{s:+g}" for s in (mixer.slopes.tolist() if hasattr(mixer, "slopes") else [0.0] * H))
    print(f"| {name} | {slopes} | " + " | ".join(", ".join(f"{v:.3g}" for v in layer.tolist())
                                              for layer in per_layer) + " |")

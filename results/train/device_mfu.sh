#!/usr/bin/env bash
# Issue 24's training-speed call, from the repository root on a CUDA machine with `.whl/` carried:
#   OUT=folder HARNESS_COMMIT=<sent commit> [STEPS=12] bash results/train/device_mfu.sh
# Default flags throughout (train.compile and train.fused_ce are auto: on for these models on a GPU):
# 1. `harness train --preset 340m` of swat and transformer for STEPS optimizer steps of 0.5M tokens
#    (length 4096; english-mix with the Llama-2 tokenizer, since fineweb-edu is not in the offline
#    mirror): tokens/s and MFU per step in each run's train_log.jsonl, what ran in meta.json's `applied`;
# 2. `harness bench models` at 340m, length 4096: the same step of swat and transformer beside Hugging
#    Face's LlamaForCausalLM (llama_hf) as a ratio (ratio.md), with each step's profile (profiles/).
# mamba-ssm is not built (MAMBA_BUILD=0): no CPU load beside the measurements.
set -u
MAMBA_BUILD=0 . results/device-setup.sh
STEPS=${STEPS:-12}
for m in swat transformer; do
  say "harness train --preset 340m --model $m, $STEPS steps"
  timeout 240 python3 -m harness train --preset 340m --model $m --quiet --no-resume --out "$G/runs/mfu/$m" \
    --set train.corpus=english-mix --set train.tokens=$((STEPS * 524288)) --set train.eval_tokens=65536 \
    --set train.save_every=100000 >> "$LOG" 2>&1
  cp "$G/runs/mfu/$m/train_log.jsonl" "$OUT/${m}_train_log.jsonl"
  cp "$G/runs/mfu/$m/checkpoint/meta.json" "$OUT/${m}_meta.json"
done
say "harness bench models: swat, transformer, llama_hf"
timeout 240 python3 -m harness bench models --preset 340m --models swat,transformer,llama_hf --peer llama_hf \
  --sweeps train --lengths train=4096 --profile --out "$OUT/bench" >> "$LOG" 2>&1
say "done"

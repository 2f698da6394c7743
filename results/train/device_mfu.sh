#!/usr/bin/env bash
# Issue 24's training-speed measurements, from the repository root with `.whl/` carried, in one
# device call (`all`, inside the 10-minute limit: the bench gets what time the training left) or
# two on one warm machine (the second reuses the tokenized corpus and Triton's cache):
#   OUT=folder HARNESS_COMMIT=<sent commit> [STEPS=10] [BUDGET_S=570] bash results/train/device_mfu.sh all
#   OUT=folder HARNESS_COMMIT=<sent commit> [STEPS=10] bash results/train/device_mfu.sh train
#   OUT=folder HARNESS_COMMIT=<sent commit> [DOCUMENTS=N] bash results/train/device_mfu.sh bench
# Default flags throughout (train.compile and train.fused_ce are auto: on for these models on a GPU):
# train: the GPU tests of the fused head + loss and of softmax attention (packed documents on torch's
#        varlen flash kernel among them; gpu_tests.log), then
#        `harness train --preset 340m` of swat and transformer for STEPS optimizer steps of 0.5M
#        tokens (length 4096; english-mix with the Llama-2 tokenizer, since fineweb-edu is not in the
#        offline mirror): tokens/s and MFU per step in each train_log.jsonl, what ran in meta.json's
#        `applied`;
# bench: `harness bench models` at 340m, length 4096: the same step of swat and transformer beside
#        Hugging Face's LlamaForCausalLM (llama_hf) as a ratio (ratio.md), with each step's profile,
#        packed as bench.tgz; DOCUMENTS=N packs documents of N tokens into each sequence, as training
#        packs the corpus's (`--documents`: the Transformer's attention is then training's kernel).
# mamba-ssm is not built (MAMBA_BUILD=0): no CPU load beside the measurements.
set -u
T0=$(date +%s)
MAMBA_BUILD=0 . results/device-setup.sh
left() { echo $(( ${BUDGET_S:-570} - ($(date +%s) - T0) )); }
train() {
  STEPS=${STEPS:-10}
  say "GPU tests of the fused head + loss (against the plain loss; TF32 against fp32 products) and of softmax attention"
  timeout -k 10 150 python3 -m pytest tests/test_train.py tests/test_baselines.py -p no:cacheprovider -W ignore -rfEs \
    -k "gpu_fused or gpu_softmax_attention" \
    > "$OUT/gpu_tests.log" 2>&1; say "tests: $(tail -1 "$OUT/gpu_tests.log")"
  for m in swat transformer; do
    say "harness train --preset 340m --model $m, $STEPS steps"
    # a run past its limit is stuck (10 steps take about 130 s): SIGABRT, with faulthandler on, puts
    # every thread's Python stack into the log (twice a machine's first Transformer run went silent)
    PYTHONFAULTHANDLER=1 timeout -s ABRT -k 10 270 python3 -m harness train --preset 340m --model $m --quiet \
      --no-resume --out "$G/runs/mfu/$m" \
      --set train.corpus=english-mix --set train.tokens=$((STEPS * 524288)) --set train.eval_tokens=65536 \
      --set train.save_every=100000 >> "$LOG" 2>&1
    cp "$G/runs/mfu/$m/train_log.jsonl" "$OUT/${m}_train_log.jsonl"
    cp "$G/runs/mfu/$m/checkpoint/meta.json" "$OUT/${m}_meta.json"
  done
}
bench() {
  if [ "$(left)" -lt 120 ]; then say "bench skipped: $(left) s left of BUDGET_S"; return; fi
  say "harness bench models: swat, transformer, llama_hf ($(( $(left) - 20 )) s at most)"
  timeout -k 10 $(( $(left) - 20 )) python3 -m harness bench models --preset 340m --models swat,transformer,llama_hf \
    --peer llama_hf --sweeps train --lengths train=4096 --profile ${DOCUMENTS:+--documents $DOCUMENTS} \
    --out "$G/bench" >> "$LOG" 2>&1
  tar czf "$OUT/bench.tgz" -C "$G" bench  # a tarball: at most 8 files come back from a call
}
case "${1:-}" in
  train) train ;;
  bench) BUDGET_S=${BUDGET_S:-560} bench ;;
  all) train; bench ;;
  *) echo "usage: device_mfu.sh all|train|bench" >&2; exit 2 ;;
esac
say "done"

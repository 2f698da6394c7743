#!/usr/bin/env bash
# One device call of the small-preset comparison (issue 10), the baselines' GPU checks (issue 5),
# the 340m speed sweep (issue 7) and the 2-GPU runs (issue 11). Run from the repository root on a
# CUDA machine, `.whl/` carried (and `.gpu-carry/` when earlier calls brought back Triton autotuning
# results):
#   OUT=folder bash results/comparison/device.sh STAGE [STAGE ...]
# Stages: gputests | checks | main | evals | seeds | ablations | mfu | bench | tune | kernels |
# distributed | disteval. On a machine of two GPUs, GPU1_STAGES="stage ..." runs those stages on the
# second GPU (for at most GPU1_BUDGET_S, with the settings GPU1_ENV="NAME=value ..." of its own, in
# shell syntax: e.g. SEED_MODELS=mamba2 BENCH_ARGS='--force --sweeps decode')
# alongside the others (which then get the first); `distributed` and `disteval` wait for them
# before they use both GPUs. On one GPU, GPU1_DEVICE=0 runs them beside the others on that GPU
# (for work that compiles more than it computes, like `checks`; not for timed stages).
# Each stage is resumable: `harness run`
# and `harness bench models` skip what their output folders already hold, so a stage cut by the
# call's time limit goes on in the next call (on the same warm machine the checkpoints under .gpu/
# are reused; on a fresh one they are retrained, deterministically, from the same seed).
# Everything installed or written stays under .gpu/ (git-ignored); $OUT gets the logs and one tarball
# of results/ rows plus the training logs, and the autotuning results to carry next time.
set -u
. results/device-setup.sh
# start from the committed rows, so that (model, task) pairs and speed sweeps already measured are not run again
mkdir -p "$G/results" && cp -rn results/comparison results/speed results/distributed results/kernels "$G/results/" 2>/dev/null

# the small-preset comparison budget: 16.8M tokens (256 steps of 65,536), warm-up 2.1M tokens
SMALL="--preset small --set train.tokens=16777216 --set train.batch_tokens=65536 --set train.warmup_tokens=2097152"
RUN="python3 -m harness run $SMALL --results $G/results/comparison --runs $G/runs --skip-missing --device cuda"
PYTEST="python3 -m pytest tests/test_baselines.py -s -q -p no:cacheprovider -W ignore --durations=0"
# one model per `harness run`, so that a model that fails (e.g. gated_deltanet where fla refuses its
# backward kernel) does not stop the others
each() {  # run-name, models (comma-separated), harness run arguments...
  local run=$1 models=$2; shift 2
  for m in ${models//,/ }; do
    case $m in mamba|mamba2) wait_mamba ;; esac
    $RUN --run "$run" --models "$m" "$@" 2>&1 | tee -a "$LOG"
  done
}
MAIN=swat,transformer,sliding_softmax,gla,mamba2,mamba,hgrn2,retnet,deltanet,gated_deltanet
stage() {
  case $1 in
  gputests)  # the GPU tests: attention paths, kernels, decode graphs, fused CE, bf16 resume; then the Mamba baselines
    timeout ${CHECK_S:-240} python3 -m pytest tests/test_attention.py tests/test_swat_kernel.py tests/test_bench_models.py \
      tests/test_train.py tests/test_eval.py -q -p no:cacheprovider -W ignore --durations=0 -k gpu 2>&1 | tee -a "$OUT/checks.log"
    wait_mamba  # and mamba-ssm's kernels under the Mamba baselines (fused decode step first: its
    # Triton kernels compile on first use, which took the whole 120 s that this group once had)
    timeout ${MAMBA_CHECK_S:-300} $PYTEST -k "gpu and mamba and not training and step" 2>&1 | tee -a "$OUT/checks.log"
    timeout ${MAMBA_CHECK_S:-300} $PYTEST -k "gpu and mamba and not training and not step" 2>&1 | tee -a "$OUT/checks.log" ;;
  checks)  # issue 5: fast paths vs references, decode vs forward, packed documents, spread over
    # CHECK_WORKERS processes, each test under CHECK_S: fla's first-use autotuning compiles dozens of
    # configurations per kernel, minutes of CPU work that one process does one at a time
    local CHECK="python3 -m pytest tests/test_baselines.py -q -p no:cacheprovider -W ignore -rP -n ${CHECK_WORKERS:-6} --timeout ${CHECK_S:-400}"
    $CHECK -k "gpu and not training and not mamba" 2>&1 | tee -a "$OUT/checks.log"
    wait_mamba
    $CHECK -k "gpu and mamba and not training" 2>&1 | tee -a "$OUT/checks.log" ;;
  main)  # every baseline at seed 0: training, the held-out loss row (smoke) and the perplexity tasks
    each seed0 "${MODELS:-$MAIN}" --tasks smoke,perplexity ;;
  evals)  # the remaining tasks on the seed-0 models
    each seed0 "${MODELS:-$MAIN}" --tasks commonsense,length,retrieval ;;
  seeds)  # a second seed of swat and the two strongest baselines of seed 0 (held-out loss: mamba, mamba2)
    each seed1 "${SEED_MODELS:-swat,mamba,mamba2}" --set train.seed=1 --tasks smoke,wikitext_2_v1,length ;;
  ablations)  # SWAT variants at the same budget (the paper's ablation tables), most telling first: the
    # sigmoid bias -log W of sigmoid-attention work (0 is the paper's); softmax; the official
    # repository's released layer (softmax + one-sided ALiBi + RoPE); slopes; RoPE; windows.
    # A variant joins settings with "+"; held-out loss, WikiText and length only (LAMBADA is at chance here)
    for v in ${ABLATIONS:-sigmoid_bias=-5.545 activation=softmax activation=softmax+slopes=negative slopes=negative \
        slopes=none rope=false window=64 window=128 window=512}; do
      sets=(); for kv in ${v//+/ }; do sets+=(--set "model.$kv"); done
      # ABL_SEED=1: the same variants at another seed, each into a folder of its own
      each "abl-${v//[=+]/-}${ABL_SEED:+-seed$ABL_SEED}" swat "${sets[@]}" ${ABL_SEED:+--set train.seed=$ABL_SEED} \
        --tasks smoke,wikitext_2_v1,length
    done ;;
  mfu)  # issue 6: tokens/s, MFU and memory of compiled swat and transformer, plain vs fused cross-entropy
    for m in ${MFU_MODELS:-swat transformer}; do for f in ${MFU_CE:-false true}; do
      python3 -m harness train --model $m $SMALL --set train.tokens=6553600 --set train.compile=true \
        --set train.fused_ce=$f --out "$G/runs/mfu/$m-fused_ce-$f" --quiet 2>&1 | tee -a "$LOG"
    done; done ;;
  distributed)  # issue 11: one GPU vs torchrun DDP and FSDP2 on two, the same global batch (65,536
    # tokens: 64 sequences, 32 per rank), DIST_TOKENS of training; then lm-eval on one GPU and data-parallel on two
    local R=$G/runs/distributed D=$G/results/distributed
    local TRAIN="python3 -m harness train $SMALL --set train.tokens=${DIST_TOKENS:-8388608} --quiet"
    local TORCHRUN="python3 -m torch.distributed.run --standalone --nproc-per-node 2"
    for m in ${DIST_MODELS:-swat mamba}; do
      case $m in mamba|mamba2) wait_mamba ;; esac
      say "distributed: $m on one GPU"
      CUDA_VISIBLE_DEVICES=0 $TRAIN --model $m --out "$R/$m-1gpu" 2>&1 | tee -a "$LOG"
    done
    [ -z "${GPU1_STAGES:-}" ] || while [ ! -f "$G/gpu1.idle" ]; do sleep 5; done
    for m in ${DIST_MODELS:-swat mamba}; do for p in ddp fsdp; do
      say "distributed: $m on two GPUs, $p"
      CUDA_VISIBLE_DEVICES=0,1 $TORCHRUN -m harness train $SMALL --set train.tokens=${DIST_TOKENS:-8388608} \
        --quiet --model $m --parallel $p --out "$R/$m-$p" 2>&1 | tee -a "$LOG"
    done; done ;;
  disteval)  # issue 11: lm-eval on one GPU, then data-parallel on two, of the one-GPU swat checkpoint
    # of `distributed` (trained first when absent: deterministic, the same weights)
    local R=$G/runs/distributed D=$G/results/distributed
    CUDA_VISIBLE_DEVICES=0 python3 -m harness train $SMALL --set train.tokens=${DIST_TOKENS:-8388608} --quiet \
      --model swat --out "$R/swat-1gpu" 2>&1 | tee -a "$LOG"
    local EVAL="-m harness eval --checkpoint $R/swat-1gpu/checkpoint --tasks ${DIST_TASKS:-piqa,arc_easy,lambada_openai,wikitext_2_v1} --results $D --skip-missing"
    CUDA_VISIBLE_DEVICES=0 python3 $EVAL --run eval-1gpu 2>&1 | tee -a "$LOG"
    [ -z "${GPU1_STAGES:-}" ] || while [ ! -f "$G/gpu1.idle" ]; do sleep 5; done
    CUDA_VISIBLE_DEVICES=0,1 python3 -m torch.distributed.run --standalone --nproc-per-node 2 $EVAL --run-name eval-2gpu 2>&1 | tee -a "$LOG" ;;
  bench)  # issue 7: 340m training / prefill / decode sweeps, one model and sweep at a time (the rows
    # are saved after each command; BENCH_ARGS e.g. "--force --set train.activation_checkpointing=true")
    for m in ${BENCH_MODELS//,/ }; do for s in ${BENCH_SWEEPS//,/ }; do
      case $m in mamba|mamba2) wait_mamba ;; esac
      python3 -m harness bench models --preset 340m --results $G/results --models $m --sweeps $s ${BENCH_ARGS:-} 2>&1 | tee -a "$LOG"
    done; done ;;
  tune)  # the decode kernel's launch configs vs SDPA over the same ring buffer (harness/bench/tune.py)
    python3 -m harness.bench.tune --sweeps ${TUNE_SWEEPS:-decode} --out "$OUT/tune_${TUNE_SWEEPS:-decode}.jsonl" 2>&1 | tee -a "$LOG" ;;
  kernels)  # the kernel benchmark (KERNEL_ARGS e.g. "--modes decode --head-dims 64")
    python3 -m harness bench kernels --out $G/results/kernels ${KERNEL_ARGS:-} 2>&1 | tee -a "$LOG" ;;
  *) say "unknown stage $1"; exit 2 ;;
  esac
}
BENCH_MODELS=${BENCH_MODELS:-swat,transformer,sliding_softmax,mamba,mamba2,gla,gated_deltanet}
BENCH_SWEEPS=${BENCH_SWEEPS:-train,prefill,decode}
export -f say stage each wait_mamba; export G OUT LOG SMALL RUN PYTEST MAIN BENCH_MODELS BENCH_SWEEPS
# the stages get the call's time less a minute for packing what they made
STAGES='for s in "$@"; do say "stage $s"; stage "$s"; done'
rm -f "$G/gpu1.idle"
if [ -n "${GPU1_STAGES:-}" ]; then
  ( export CUDA_VISIBLE_DEVICES=${GPU1_DEVICE:-1} LOG=$OUT/log_gpu1.txt; eval "export ${GPU1_ENV:-}"
    timeout ${GPU1_BUDGET_S:-${BUDGET_S:-530}} bash -c "$STAGES" stages $GPU1_STAGES; touch "$G/gpu1.idle" ) &
  export CUDA_VISIBLE_DEVICES=0
fi
timeout ${BUDGET_S:-530} bash -c "$STAGES" stages "$@"
wait
say "packing"
mkdir -p "$G/pack"; rm -rf "$G/pack"/*
(cd "$G" && find runs -name train_log.jsonl -o -name meta.json -path '*checkpoint*' | tar czf "$OUT/runs_logs.tgz" -T - 2>/dev/null)
[ -d "$G/results" ] && tar czf "$OUT/results.tgz" -C "$G" results
(cd "$G/triton" && find . -name '*.autotune.json' | tar czf "$OUT/autotune.tgz" -T -)
say "done"

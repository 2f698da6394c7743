#!/usr/bin/env bash
# One device call of the scaling study (issue 21), from the repository root on a CUDA machine with
# `.whl/` carried (and `.gpu-carry/` when earlier calls brought back Triton autotuning results):
#   OUT=folder HARNESS_COMMIT=<sent commit> BUDGET_S=520 [JOBS=N] [START_NEW_S=S] [SIZES=s,m] [MODELS=a,b]
#   [DOCUMENT_SCORING=S]
#   bash results/scaling/device.sh
# Runs `harness study results/scaling/study.yaml` with JOBS trainings side by side on the one GPU
# (their timings are therefore not speed numbers), the Mamba models in a second study process of
# MAMBA_STUDY_JOBS (default 2) once mamba-ssm's CUDA build is done (built here in the background,
# sm_90 only), and GPU_TESTS (a pytest -k expression, optional) beside them. JOBS defaults to what
# the GPU's memory holds: an `m` run peaks near 11 GiB and an `l` run near 12.4 (peak_mem_gib in
# train/*/*_meta.json), so one per 12 GiB in all (H100: 6, H200: 11); a run squeezed out of memory
# all the same runs again later with fewer beside it (harness.study.runner). Everything is
# resumable: the study skips runs whose rows exist and resumes cut trainings from their checkpoints
# under .gpu/runs (kept on a warm machine); on a fresh machine it starts from the committed rows.
# The largest size's runs start first (--largest-first): an `l` run (5-7 minutes of training beside
# others, then its tasks) may outlast a call, and must finish before the machine
# goes. $OUT gets the log, the study's results folder (rows, training logs, tables) as
# results.tgz, the workers' consoles and every run's per-step log as logs.tgz, and the autotuning
# results to carry next time (unpack autotune.tgz into .gpu-carry/triton for this session's next
# calls; at the session's end, merge it into the committed results/triton-autotune.tgz). START_NEW_S, for a
# session's last call: start trainings only in its first S seconds and only those that the study's
# finished runs of their size say can finish before the time limit, then only finish what has a
# checkpoint on this machine (a training it cannot finish would be lost with the machine). SIZES:
# run only these sizes, e.g. s,m when too little device time is left for an `l` training to finish.
set -u
T0=$(date +%s)
left() { echo $(( ${BUDGET_S:-520} - ($(date +%s) - T0) )); }
# MODELS (optional, comma-separated): run only these of the study's models and references; the
# Mamba models among them go to the second study process as always. Without any, mamba-ssm is not
# built and its GPU slots go to the other runs
read -r OTHERS MAMBA < <(python3 -c "import yaml; s = yaml.safe_load(open('results/scaling/study.yaml'))
chosen = '${MODELS:-}'.split(',') if '${MODELS:-}' else s['models'] + s.get('references', [])
mamba = [m for m in chosen if m in ('mamba', 'mamba2')]
print(','.join(m for m in chosen if m not in mamba) or '-', ','.join(mamba) or '-')")
[ "$MAMBA" = - ] && MAMBA_BUILD=${MAMBA_BUILD:-0} MAMBA_STUDY_JOBS=0
MAMBA_JOBS=${MAMBA_JOBS:-6} . results/device-setup.sh
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True  # less memory lost to fragmentation between the runs sharing the GPU
MAMBA_STUDY_JOBS=${MAMBA_STUDY_JOBS:-2}
SLOTS=$(( $(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1) / 1024 / 12 ))
JOBS=${JOBS:-$(( SLOTS > MAMBA_STUDY_JOBS + 1 ? SLOTS - MAMBA_STUDY_JOBS : 2 ))}
mkdir -p "$G/results" && cp -rn results/scaling "$G/results/" 2>/dev/null
STUDY="python3 -m harness study results/scaling/study.yaml --results $G/results --runs $G/runs --device cuda
       --largest-first ${START_NEW_S:+--start-new-for $START_NEW_S} ${SIZES:+--sizes $SIZES}"
# the study stops its workers at --time-limit (a worker in its evaluation tasks after the one in
# flight, killed 45 s later) and writes its report; past BUDGET_S - 20 it is ended outright, so
# that the packing below always runs within the call (its rows are written atomically)
hard() { timeout -k 10 $(( $(left) - 20 - ${DOCUMENT_SCORING:-0} )) "$@"; }
if [ -n "${GPU_TESTS:-}" ]; then  # ends with the study: the `wait` below waits for it before the scoring and packing
  timeout $(( $(left) - 30 - ${DOCUMENT_SCORING:-0} )) python3 -m pytest tests -p no:cacheprovider -W ignore -rfEs -k "$GPU_TESTS" \
    > "$OUT/gpu_tests.log" 2>&1 &
fi
if [ "$OTHERS" != - ]; then
  say "study: $OTHERS with $JOBS jobs"
  hard $STUDY --models "$OTHERS" --jobs $JOBS --time-limit $(( $(left) - 90 - ${DOCUMENT_SCORING:-0} )) >> "$LOG" 2>&1 &
fi
if [ "$MAMBA" != - ]; then
  ( while [ ! -f "$G/mamba.done" ]; do sleep 5; done
    say "mamba-ssm ready; study: $MAMBA with $MAMBA_STUDY_JOBS jobs"
    hard $STUDY --models $MAMBA --jobs $MAMBA_STUDY_JOBS --time-limit $(( $(left) - 90 - ${DOCUMENT_SCORING:-0} )) >> "$OUT/log_mamba.txt" 2>&1 ) &
fi
wait
# DOCUMENT_SCORING=S (optional): for up to S seconds, the attention checkpoints on this machine scored
# across and within document boundaries (README.md, "Things to know"); the study ends S seconds earlier
if [ -n "${DOCUMENT_SCORING:-}" ]; then
  # a script run by path has its own folder on sys.path, not the repository root that holds harness/
  PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" timeout "$DOCUMENT_SCORING" python3 results/scaling/document_scoring.py "$G/runs/scaling" > "$OUT/document_scoring.md" 2>&1
fi
say "packing"
tar czf "$OUT/results.tgz" -C "$G/results" scaling
# the workers' consoles, and the per-step logs of every run on this machine: a cut `l` run's tokens/s
# says whether the calls left can finish it
(cd "$G/runs/scaling" && { echo logs; find . -name train_log.jsonl; } | tar czf "$OUT/logs.tgz" -T -)
(cd "$G/triton" && find . -name '*.autotune.json' | tar czf "$OUT/autotune.tgz" -T -)
say "done ($(( $(date +%s) - T0 )) s)"

#!/usr/bin/env bash
# GPU evaluation of a small-preset SWAT checkpoint through every task of `all` that has data here
# (speed excluded: it has its own sweep, `harness bench models`). Run from the repository root on a
# CUDA machine with lm-eval's wheels in .whl/ (the device tool's copy of the tree); rows land in
# $OUT/results/small-gpu-eval/. Token budget cut to 13M tokens (100 steps) to fit one device call.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
  .whl/lm_eval-*.whl .whl/datasets-*.whl .whl/dill-*.whl .whl/multiprocess-*.whl .whl/sqlitedict-*.whl
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -m harness train --model swat --preset small --set train.tokens=13107200 --runs /tmp/runs \
  --run small-gpu-eval --quiet
timeout "${EVAL_BUDGET_S:-240}" python3 -m harness eval --run small-gpu-eval --runs /tmp/runs \
  --results "$OUT/results" --tasks commonsense,perplexity,length,retrieval --skip-missing --device cuda

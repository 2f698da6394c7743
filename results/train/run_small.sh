#!/usr/bin/env bash
# The one-GPU training runs behind results/train/<device>/NOTE.md: small preset, swat and mamba, with
# token budgets cut to fit a few minutes of device time.
# Usage (repository root, a CUDA GPU): OUT=some/folder bash results/train/run_small.sh
# Outputs in $OUT: console.log, <run>_log.jsonl, <run>_meta.json (train_log.jsonl and
# checkpoint/meta.json of each run folder under $RUNS).
export PYTHONUNBUFFERED=1 HARNESS_CACHE=${HARNESS_CACHE:-/tmp/hc}
L=$OUT/console.log; RUNS=${RUNS:-/tmp/runs}; PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee $L
$PY -c "import torch,triton;print('torch',torch.__version__,'triton',triton.__version__)" 2>&1 | tee -a $L
$PY -c "import mamba_ssm" 2>&1 | tail -1 | tee -a $L
date -u | tee -a $L
# tokenize the small preset's corpus once (cached), outside the timed runs
timeout 90 $PY -c "from harness.data.tokenizer import get_tokenizer;from harness.data.streams import prepare_streams as p;from harness.config import load_config as c;t=c('small').train;s=p(t.corpus,get_tokenizer(t.tokenizer));print('corpus',t.corpus,'tokens',len(s[0].tokens),len(s[1].tokens))" 2>&1 | tail -2 | tee -a $L
timeout 45 $PY -m pytest -q -p no:cacheprovider tests/test_train.py -k gpu 2>&1 | tail -2 | tee -a $L
run() {  # name, time limit (s), harness train arguments
  n=$1; t=$2; shift 2
  echo "+ [$(date -u +%T)] harness train --preset small $*" | tee -a $L
  timeout $t $PY -m harness train --preset small --quiet --out $RUNS/$n "$@" 2>&1 | tail -5 | tee -a $L
  cp $RUNS/$n/train_log.jsonl $OUT/${n}_log.jsonl; cp $RUNS/$n/checkpoint/meta.json $OUT/${n}_meta.json
}
run swat 110 --model swat --set train.tokens=7864320
# where the time goes: CUDA kernels of 2 micro-batches (fwd + bwd) of the same model, eager
timeout 45 $PY - <<'PYEOF' 2>&1 | tail -22 | tee -a $L
import torch
from torch.profiler import ProfilerActivity, profile
from harness.config import load_config
from harness.data.streams import prepare_streams
from harness.data.tokenizer import get_tokenizer
from harness.model.build import build_model
from harness.training.batches import batch_at
from harness.training.recipe import lm_loss
cfg = load_config("small"); t = cfg.train
train, _ = prepare_streams(t.corpus, get_tokenizer(t.tokenizer))
model = build_model("swat", cfg.model, "cuda")
batches = [batch_at(train, t.seq_len, t.seed, i * t.micro_batch, t.micro_batch, "cuda") for i in range(4)]
def step(b):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = lm_loss(model, *b)
    loss.backward()
for b in batches[:2]:
    step(b)
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    for b in batches[2:]:
        step(b)
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15, max_name_column_width=60))
PYEOF
run mamba 80 --model mamba --set train.tokens=12288 --set train.batch_tokens=4096 --set train.micro_batch=4 \
  --set train.eval_tokens=8192 --set train.warmup_tokens=4096
echo "done [$(date -u +%T)]" | tee -a $L

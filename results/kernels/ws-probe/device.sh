#!/usr/bin/env bash
# The Gluon passes' GPU call, from the repository root on a Hopper GPU (one device call):
#   OUT=folder HARNESS_COMMIT=<sent commit> bash results/kernels/ws-probe/device.sh (the commit the rows record)
# 1. hang.sh with PASSES=gluon (each head size in its own process, 60 s at most: do they run at all;
#    call 47's took about 12 s each, compiling included);
# 2. gluon_check.py against the reference at edge-case shapes (200 s at most), only if none hung;
# 3. bench.py's gluon rows beside the current passes at B = 4, T = 16384, W = T, 2048, 512, if the
#    check passed (280 s at most; under 10 minutes in all). Everything goes to $OUT
#    (hang_gluon_d*.txt, gluon_check.txt, ws.jsonl, gluon_bench.txt).
set -u
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=$PWD/.gpu/triton
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
PASSES=gluon LIMIT=60 bash results/kernels/ws-probe/hang.sh | tee "$OUT/hang.txt"
if grep -Eq "rc=(124|137)" "$OUT/hang.txt"; then echo "a Gluon launch did not finish: no check, no bench"; exit 1; fi
timeout -k 5 200 python3 results/kernels/ws-probe/gluon_check.py > "$OUT/gluon_check.txt" 2>&1
rc=$?; tail -1 "$OUT/gluon_check.txt"
if [ $rc -ne 0 ]; then echo "gluon_check.py exit $rc: no bench"; exit 1; fi
timeout -k 5 280 python3 results/kernels/ws-probe/bench.py "$OUT" T,2048,512 0 4,16384 128,64 gluon \
  > "$OUT/gluon_bench.txt" 2>&1
echo "bench exit $?"

# Warp-specialized launches at a small shape (B=1, T=2048, W=512), one process per head size and
# pass under a LIMIT-second limit (30 by default): which run and which hang.
#   OUT=dir [PASSES="gluon fwd dq dkdv"] [LIMIT=30] bash results/kernels/ws-probe/hang.sh
# (gluon: gluon_swat.py's forward and backward; fwd, dq, dkdv: kernels.py's passes with Triton's automatic pass)
for d in 64 128; do
  for p in ${PASSES:-gluon fwd dq dkdv}; do
    timeout -k 5 "${LIMIT:-30}" python3 results/kernels/ws-probe/bench.py "$OUT" 512 1 1,2048 $d $p > "$OUT/hang_${p}_d$d.txt" 2>&1
    echo "d=$d $p rc=$? rows=$(grep -c '"ws": true' "$OUT/hang_${p}_d$d.txt") ok=$(grep '"ws": true' "$OUT/hang_${p}_d$d.txt" | grep -c '"ms"')"
  done
done

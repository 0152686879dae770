#!/bin/bash
# Interleaved pairs: pairwise ppdnmf-synthetic on Ray, then in memory, OUTERS outer
# iterations each; per run: wall_s, protocol_s and the median outer iteration
# (the first left out). Usage: benchmarks/ray_vs_memory.sh PAIRS OUTERS
set -euo pipefail
pairs=${1:-3}
outers=${2:-12}
out=$(mktemp -d)
for _ in $(seq "$pairs"); do
    for backend in ray memory; do
        args=(simulate ppdnmf-synthetic --set exchange=pairwise --set "outer_iters=$outers"
              --quiet --out "$out/$backend")
        [ "$backend" = ray ] && args+=(--backend ray)
        rm -rf "${out:?}/$backend"
        OMP_NUM_THREADS=1 python -m cipherfact.cli "${args[@]}" >/dev/null 2>&1
        python - "$out/$backend" "$backend" <<'PY'
import json, statistics, sys
run = sys.argv[1]
summary = json.load(open(f"{run}/summary.json"))
walls = [json.loads(line)["wall_s"] for line in open(f"{run}/metrics.jsonl")]
print(f"{sys.argv[2]:6s} wall_s {summary['wall_s']:.2f} protocol_s {summary['protocol_s']:.2f} "
      f"median outer {statistics.median(walls[1:]):.3f}")
PY
    done
done
rm -rf "$out"

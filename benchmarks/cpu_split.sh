#!/bin/bash
# System-wide CPU time around one command, from /proc/stat (Linux): wall seconds,
# busy jiffies (user + nice + system + irq + softirq + steal; the nice part
# separately, e.g. Ray's workers at nice 15) and idle jiffies (idle + iowait).
# 100 jiffies = 1 core-second. Usage: benchmarks/cpu_split.sh COMMAND [ARG ...]
# Run two lengths of the same job and subtract to cancel start-up costs.
set -euo pipefail
read -r _ u n s i w x y z _ < /proc/stat
t0=$(date +%s.%N)
"$@" > /dev/null 2>&1
read -r _ u2 n2 s2 i2 w2 x2 y2 z2 _ < /proc/stat
t1=$(date +%s.%N)
echo "wall $(echo "$t1 - $t0" | bc) s; busy $(( (u2+n2+s2+x2+y2+z2) - (u+n+s+x+y+z) )) jiffies (nice part $((n2-n))); idle $(( (i2+w2) - (i+w) )) jiffies"

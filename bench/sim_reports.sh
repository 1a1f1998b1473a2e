#!/usr/bin/env bash
# The simulator's seed-1 reports, one file each, for a before/after byte comparison of a refactor:
#   bench/sim_reports.sh OUT_DIR        (run on both trees, then: diff -r --exclude=DONE A B)
# Wall-time lines are dropped: they are the only part a seed does not determine.
set -euo pipefail
out=${1:?usage: bench/sim_reports.sh OUT_DIR}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
run() { local name=$1; shift; "$py" -m sim "$@" 2>&1 | grep -v '^wall time' > "$out/$name"; }
run gossip100.json gossip --nodes 100 --seed 1 --json
run gossip100-loss.json gossip --nodes 100 --seed 1 --loss 0.05 --json
run membership100.json membership --nodes 100 --seed 1 --loss 0.05 --crashes 10 --failovers 5 --json
run broadcast100.txt broadcast --nodes 100 --seed 1 --size 400MB --link-mbps 100 --latency-ms 20
run epidemic10000.json epidemic --nodes 10000 --seed 1 --json
for s in steady leader-churn spot-storm split-brain disk-full; do
    run "run-$s.json" run "sim/scenarios/$s.yaml" --seed 1 --json
done

#!/usr/bin/env bash
# The two stacks and the two engines on this machine, alternated so that a shared machine's
# changing load falls on both sides alike (RESULTS.md, "Engines and stacks"):
#   single process: TensorFlow 2.21 + tf-keras (.venv-current) against 2.15 (.venv)
#   2 workers:      tf-distribute (mpnn-launch, .venv-current) against Horovod (horovodrun --mpi, .venv)
# Each pair runs ROUNDS times; the ratios printed are the medians of the per-round ratios.
#
# Usage: bash benchmarks/engines.sh DATA [OUT_DIR]
#   DATA     prepared water data set (e.g. the tests' 2,000-cluster subset, or work/water)
#   OUT_DIR  where the mpnn-bench reports go (default bench-engines/)
# Variables: ROUNDS (default 3), BENCH_ARGS (default: the tutorial-size MPNN, width 32,
# 8 message steps, batch 256 per rank, 15 timed steps, median of 3 repeats).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${1:?usage: bash benchmarks/engines.sh DATA [OUT_DIR]}"
out="${2:-bench-engines}"
rounds="${ROUNDS:-3}"
read -r -a bench <<< "${BENCH_ARGS:---widths 32 --message-steps 8 --batch-sizes 256 --steps 15 --repeats 3 --warmup-steps 3}"
old="$repo_root/.venv/bin" new="$repo_root/.venv-current/bin"
for tool in "$old/horovodrun" "$new/mpnn-launch"; do
    [[ -x "$tool" ]] || { echo "engines.sh: no $tool: run scripts/setup.sh (and MPNN_STACK=current)" >&2; exit 1; }
done
mkdir -p "$out"
export OMPI_MCA_mpi_yield_when_idle=1
[[ $(id -u) -eq 0 ]] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# The other stack's TensorFlow 2.15 must not see the current stack's TF_USE_LEGACY_KERAS.
unset TF_USE_LEGACY_KERAS
for round in $(seq 1 "$rounds"); do
    "$old/mpnn-bench" train --data "$data" "${bench[@]}" --engine horovod --output "$out/single-tf215-$round.json"
    "$new/mpnn-bench" train --data "$data" "${bench[@]}" --engine tf-distribute --output "$out/single-tf221-$round.json"
    "$old/horovodrun" -np 2 -H localhost:2 --mpi "$old/mpnn-bench" train --data "$data" "${bench[@]}" \
        --engine horovod --output "$out/two-horovod-$round.json"
    "$new/mpnn-launch" -np 2 "$new/mpnn-bench" train --data "$data" "${bench[@]}" \
        --engine tf-distribute --output "$out/two-tf-distribute-$round.json"
done 2>"$out/stderr.log"
"$new/python" - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rate = lambda name: json.load(open(f"{out}/{name}.json"))["results"][0]["graphs_per_second"]
for label, new, old in (("single process, TF 2.21 / TF 2.15", "single-tf221", "single-tf215"),
                        ("2 workers, tf-distribute / Horovod", "two-tf-distribute", "two-horovod")):
    pairs = [(rate(f"{new}-{r}"), rate(f"{old}-{r}")) for r in range(1, rounds + 1)]
    ratios = [a / b for a, b in pairs]
    print(f"{label}: median ratio {statistics.median(ratios):.2f} (rounds: "
          + ", ".join(f"{a:.0f}/{b:.0f}" for a, b in pairs) + " graphs/s)")
PY

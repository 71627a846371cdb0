#!/usr/bin/env bash
# Weak scaling of CPU training on one node: alternating 1-rank and N-rank runs of
# `mpnn-bench train` (default model, one thread per rank, ranks bound to cores), so that a
# machine whose speed drifts slows both alike. Writes OUT/rR-n1.json and OUT/rR-nN.json.
#
#   bash benchmarks/weak_scaling.sh [DATA] [OUT] [RANKS] [ROUNDS]
#   bash benchmarks/weak_scaling.sh work/water benchmarks/results/weak 2 3
#
# Efficiency = N-rank total graphs/s / (N x 1-rank graphs/s), per batch size, in the N-rank
# report's "scaling_efficiency" (RESULTS.md, "Weak scaling on 2 ranks"). Batch sizes: BATCHES (default "64 256 1024").
set -euo pipefail
data=${1:-work/water}
out=${2:-bench-weak}
ranks=${3:-2}
rounds=${4:-3}
batches=${BATCHES:-64 256 1024}
export OMPI_MCA_mpi_yield_when_idle=1  # see jobs/common.sh: Open MPI's progress loop must not spin
source "$(dirname "${BASH_SOURCE[0]}")/../jobs/common.sh"
mpnn_allow_mpi_as_root
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
    for n in 1 "$ranks"; do
        baseline=()  # the N-rank report gets each result's efficiency against this round's 1-rank run
        [[ $n == 1 ]] || baseline=(--baseline "$out/r$round-n1.json")
        # shellcheck disable=SC2086  # batches is a list
        mpirun -np "$n" --bind-to core --map-by core -x OMPI_MCA_mpi_yield_when_idle \
            python -m mpnn.cli.bench train --data "$data" --widths 32 --batch-sizes $batches --steps 50 \
            --repeats 3 --intra-op 1 --inter-op 1 --data-threads 1 --output "$out/r$round-n$n.json" "${baseline[@]}"
    done
done

#!/usr/bin/env bash
# How the cost of water clusters with coordinates grows with their number (RESULTS.md,
# "Data preparation"): for each size N, one generated set of 3-30
# waters (benchmarks/make_water_set.py: TIP4P energies up to 300,000 structures, the 0.0
# placeholder beyond, where generating the labels would dominate), then
#   - the read floor: ASE's extxyz reader over the same files (benchmarks/ase_read_floor.py);
#   - conversion with 1 and 2 processes and with 2 MPI ranks (mpnn-bench prep: wall and CPU
#     seconds, peak RSS of every process);
#   - the size of the converted set, loader graphs/s and training graphs/s on it
#     (mpnn-bench loader / train, default MPNN at batch 256).
# Writes OUT/nN-*.json; sets are kept under SETS (default /tmp/mpnn-water-sets) for reruns.
#
#   bash benchmarks/water_scale.sh OUT "30000 300000 3000000"
#   PREP_WORKERS="2" MPI=0 FLOOR=0 bash benchmarks/water_scale.sh OUT 3000000   # fewer configurations
set -euo pipefail
out=${1:-bench-scale}
sizes=${2:-30000 300000 3000000}
sets=${SETS:-/tmp/mpnn-water-sets}
prep_workers=${PREP_WORKERS:-1 2}
mpi=${MPI:-1}
floor=${FLOOR:-1}  # 0: skip the read floor (per frame it does not depend on N; 3M frames take 30 min)
source "$(dirname "${BASH_SOURCE[0]}")/../jobs/common.sh"
mpnn_allow_mpi_as_root
mkdir -p "$out" "$sets"
for n in $sizes; do
    set_dir="$sets/water-$n"
    energy=()
    # ENERGY=tip4p: physical labels at any N (a set to train on; about 5 minutes per million here)
    [[ ${ENERGY:-} != tip4p ]] && ((n > 300000)) && energy=(--energy none)
    if [[ ! -f "$set_dir/water_set.json" ]]; then
        rm -rf "$set_dir"
        python benchmarks/make_water_set.py --count "$n" --files $((n / 100000 + 4)) --workers 2 \
            "${energy[@]}" -o "$set_dir" --quiet
    fi
    if ((floor)); then
        python benchmarks/ase_read_floor.py --inputs "$set_dir" --output "$out/n$n-floor.json"
    fi
    # The last conversion's data set is kept for the size, loader and training rows.
    records="$sets/water-$n-records"
    # shellcheck disable=SC2086  # prep_workers is a list
    python -m mpnn.cli.bench prep --inputs "$set_dir" --workers $prep_workers --repeats 1 \
        --keep-output "$records" --output "$out/n$n-prep.json"
    if ((mpi)); then
        python -m mpnn.cli.bench prep --inputs "$set_dir" --workers 2 --mpi --repeats 1 --output "$out/n$n-prep-mpi.json"
    fi
    du -sb "$records" | awk -v n="$n" '{printf "{\"structures\": %d, \"output_bytes\": %d}\n", n, $1}' \
        >"$out/n$n-size.json"
    python -m mpnn.cli.bench loader --data "$records" --batch-sizes 256 --settings autotune --repeats 1 \
        --output "$out/n$n-loader.json"
    python -m mpnn.cli.bench train --data "$records" --widths 32 --batch-sizes 256 --steps 50 --repeats 1 \
        --output "$out/n$n-train.json"
done

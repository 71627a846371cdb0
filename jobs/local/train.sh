#!/usr/bin/env bash
# Data-parallel training on one workstation with horovodrun.
#
# Variables (all optional but DATA):
#   DATA        prepared data set (directory with manifest.json)
#   NP          ranks (default 2; on CPU one per core, on GPUs one per GPU)
#   CONFIG      JSON/YAML settings file for mpnn-train
#   RUN_DIR     run directory (default runs/local-<time>)
#   CONTROLLER  gloo (default, needs no MPI) or mpi
# Extra arguments are passed to mpnn-train, e.g.  bash jobs/local/train.sh --epochs 5
set -euo pipefail
: "${DATA:?set DATA to a prepared data set (directory with manifest.json)}"
NP="${NP:-2}"
RUN_DIR="${RUN_DIR:-runs/local-$(date +%Y%m%d-%H%M%S)}"
CONTROLLER="${CONTROLLER:-gloo}"
args=(--data "$DATA" --run-dir "$RUN_DIR")
[[ -n "${CONFIG:-}" ]] && args+=(--config "$CONFIG")
if [[ $(id -u) -eq 0 ]]; then  # OpenMPI refuses root unless told
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
exec horovodrun -np "$NP" -H "localhost:$NP" "--$CONTROLLER" mpnn-train "${args[@]}" "$@"

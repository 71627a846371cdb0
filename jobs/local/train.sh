#!/usr/bin/env bash
# Data-parallel training on one workstation: horovodrun, or mpnn-launch with
# MPNN_ENGINE=tf-distribute.
#
# Variables (all optional but DATA):
#   DATA        prepared data set (directory with manifest.json)
#   NP          ranks (default 2; on CPU one per core, on GPUs one per GPU)
#   CONFIG      JSON/YAML settings file for mpnn-train
#   RUN_DIR     run directory (default runs/local-<time>)
#   CONTROLLER  mpi (default: with Open MPI yielding idle cores, 2 CPU ranks scale best,
#               see RESULTS.md) or gloo (needs no MPI); Horovod only
#   MPNN_ENGINE horovod (default) or tf-distribute (see jobs/common.sh)
#   RESUME, TRAIN_ARGS, MPNN_HOME, MPNN_VENV: see jobs/common.sh
# Extra arguments are passed to mpnn-train, e.g.  bash jobs/local/train.sh --epochs 5
set -euo pipefail
MPNN_SCRIPT=local/train.sh
# Not under a scheduler, so the script's own location is reliable here.
MPNN_HOME="${MPNN_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
source "$MPNN_HOME/jobs/common.sh"

NP="${NP:-2}"
CONTROLLER="${CONTROLLER:-mpi}"
RUN_DIR="${RUN_DIR:-runs/local-$(date +%Y%m%d-%H%M%S)}"
mpnn_setup
mpnn_cpu_rank_defaults
mpnn_train_args
if [[ $MPNN_ENGINE == tf-distribute ]]; then
    mpnn_run mpnn-launch -np "$NP" mpnn-train "${MPNN_ARGS[@]}" "$@"
else
    mpnn_run horovodrun -np "$NP" -H "localhost:$NP" "--$CONTROLLER" mpnn-train "${MPNN_ARGS[@]}" "$@"
fi

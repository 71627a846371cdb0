#!/bin/bash
# Usage: gpu-affinity.sh command [args]
# Show each rank only the GPU of its local rank (CUDA_VISIBLE_DEVICES), then run the
# command. Not needed by default: mpnn-train already takes GPU <local rank> of the GPUs it
# sees. Use it (GPU_AFFINITY=1 in jobs/pbs/train-gpu.pbs) where a site wants each rank to
# see one device, e.g. to pair ranks with the GPUs nearest their cores (edit the mapping).
set -euo pipefail
local_rank="${PALS_LOCAL_RANKID:-${OMPI_COMM_WORLD_LOCAL_RANK:-${MPI_LOCALRANKID:-${PMI_LOCAL_RANK:-}}}}"
if [[ -z "$local_rank" ]]; then
    echo "gpu-affinity.sh: no local rank in the environment (PALS, OpenMPI, MPICH); GPUs left as they are" >&2
else
    gpus="$(nvidia-smi -L 2>/dev/null | wc -l)"
    if [[ "$gpus" -gt 0 ]]; then
        export CUDA_VISIBLE_DEVICES=$(( local_rank % gpus ))
    fi
fi
exec "$@"

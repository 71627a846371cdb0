# PBS part of the job scripts (sourced after jobs/common.sh): the layout of the ranks from
# $PBS_NODEFILE, and one mpiexec command line for the MPI at hand.
#
# Reads:
#   RANKS_PER_NODE   ranks per node (default: the caller's, else how often the first host
#                    appears in $PBS_NODEFILE, i.e. `mpiprocs` of `-l select=...`)
#   DEPTH            cores (hardware threads) per rank for CPU binding
#                    (default: $NCPUS or the cores here, divided by RANKS_PER_NODE)
#   MPIEXEC_FLAVOUR  pals (HPE Cray PALS, as on Polaris) or openmpi; default: openmpi when
#                    `mpiexec --version` says so, else pals. Other MPIs: add a case below.
#   MPIEXEC_FLAGS    extra mpiexec flags, split on white space
# Sets: NNODES, RANKS_PER_NODE, DEPTH.

# Usage: pbs_layout [default ranks per node]
pbs_layout() {
    [[ -f "${PBS_NODEFILE:-}" ]] || mpnn_die "PBS_NODEFILE='${PBS_NODEFILE:-}' is not a file; submit with qsub"
    NNODES="$(sort -u "$PBS_NODEFILE" | wc -l)"
    local first
    first="$(head -n 1 "$PBS_NODEFILE")"
    RANKS_PER_NODE="${RANKS_PER_NODE:-${1:-$(grep -cxF "$first" "$PBS_NODEFILE")}}"
    local cpus="${NCPUS:-$(nproc)}"
    DEPTH="${DEPTH:-$(( cpus / RANKS_PER_NODE > 0 ? cpus / RANKS_PER_NODE : 1 ))}"
}

# Usage: pbs_mpiexec command [args]  -- NNODES * RANKS_PER_NODE ranks, DEPTH cores each.
# With MPNN_ENGINE=tf-distribute each rank runs `mpnn-launch --pbs command`, which builds its
# TF_CONFIG from $PBS_NODEFILE and its MPI rank.
pbs_mpiexec() {
    local flavour="${MPIEXEC_FLAVOUR:-}" extra=() launcher=()
    mpnn_task_prefix pbs
    if [[ -z "$flavour" ]]; then
        flavour=pals
        if mpiexec --version 2>&1 | grep -qiE 'open ?mpi|openrte'; then
            flavour=openmpi
        fi
    fi
    read -r -a extra <<< "${MPIEXEC_FLAGS:-}"
    local ranks=$(( NNODES * RANKS_PER_NODE ))
    case "$flavour" in
        pals)  # Cray PALS passes the whole environment to the ranks by default.
            launcher=(mpiexec -n "$ranks" --ppn "$RANKS_PER_NODE" --depth "$DEPTH" --cpu-bind depth)
            ;;
        openmpi)  # ppr:N:node is -npernode N; PE=D binds each rank to D cores.
            launcher=(mpiexec -n "$ranks" --hostfile "$PBS_NODEFILE"
                --map-by "ppr:$RANKS_PER_NODE:node:PE=$DEPTH" --bind-to core)
            local name
            for name in PATH LD_LIBRARY_PATH PYTHONPATH VIRTUAL_ENV OMP_NUM_THREADS CUDA_VISIBLE_DEVICES PBS_NODEFILE \
                    PBS_JOBID; do
                if [[ -n "${!name:-}" ]]; then
                    launcher+=(-x "$name")  # OpenMPI copies only what it is told to other nodes
                fi
            done
            ;;
        *) mpnn_die "MPIEXEC_FLAVOUR must be pals or openmpi, got '$flavour'" ;;
    esac
    mpnn_run "${launcher[@]}" "${extra[@]}" "${MPNN_TASK[@]}" "$@"
}

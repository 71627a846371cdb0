# Slurm part of the job scripts (sourced after jobs/common.sh): start the ranks, and
# requeue the job shortly before its time limit.
#
# Reads:
#   LAUNCHER    srun (default): one task per rank, Horovod's MPI build wired up by srun's
#               PMI plugin (MPNN_ENGINE=tf-distribute: each task runs `mpnn-launch --slurm`,
#               which builds its TF_CONFIG from SLURM_*, with no PMI); horovodrun: `horovodrun
#               --gloo` with the hosts of the allocation (Horovod only; needs no PMI, but
#               password-less ssh between the nodes when there are several)
#   SRUN_MPI    srun's PMI plugin (default pmix; pmi2 where Slurm has no PMIx; see
#               `srun --mpi=list`). It must match the MPI Horovod was built with. pmix is
#               what tests/jobs uses: Debian's Slurm 22.05 (mpi/pmix_v4) starts the ranks of
#               Horovod built on Debian's OpenMPI 4.1.4 (PMIx-enabled) directly, so srun
#               needs neither mpirun nor horovodrun.
#   SRUN_FLAGS  extra srun flags, split on white space (e.g. "--network=...")
#   REQUEUE     1 (default): on the signal that `#SBATCH --signal=B:USR1@<seconds>` sends
#               before the time limit, run `scontrol requeue`; 0: only log the signal

# Trap handler: put this job back in the queue. Slurm stops the running step; the job keeps
# its id, hence its default RUN_DIR, and mpnn-train --resume continues from the last
# complete checkpoint (the epoch in progress is lost).
slurm_requeue() {
    echo "${MPNN_SCRIPT:-${0##*/}}: time limit near, requeueing job $SLURM_JOB_ID" >&2
    scontrol requeue "$SLURM_JOB_ID"
}

# Usage: slurm_launch [srun flags] -- command [args]
# Runs the command once per task of the allocation with the launcher chosen by LAUNCHER.
slurm_launch() {
    local srun_flags=() extra=() launcher=()
    while [[ $# -gt 0 && "$1" != -- ]]; do
        srun_flags+=("$1")
        shift
    done
    shift  # the --
    read -r -a extra <<< "${SRUN_FLAGS:-}"
    local pmi="${SRUN_MPI:-pmix}"
    mpnn_task_prefix slurm
    [[ ${MPNN_ENGINE:-horovod} == tf-distribute ]] && pmi="${SRUN_MPI:-none}"  # TF_CONFIG, not PMI
    case "${LAUNCHER:-srun}" in
        srun)
            # Slurm 22.05 srun no longer inherits --cpus-per-task from sbatch: pass it on.
            # Block distribution: the task order mpnn-launch --slurm assumes (mpnn.cluster_env).
            launcher=(srun --mpi="$pmi" --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}"
                --cpu-bind=cores --distribution=block "${srun_flags[@]}" "${extra[@]}" "${MPNN_TASK[@]}")
            ;;
        horovodrun)
            [[ ${MPNN_ENGINE:-horovod} == horovod ]] || mpnn_die "LAUNCHER=horovodrun needs MPNN_ENGINE=horovod"
            [[ -n "${SLURM_NTASKS_PER_NODE:-}" ]] || mpnn_die "LAUNCHER=horovodrun needs --ntasks-per-node"
            local hosts
            hosts="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/\$/:$SLURM_NTASKS_PER_NODE/" | paste -sd,)"
            launcher=(horovodrun --gloo -np "$SLURM_NTASKS" -H "$hosts")
            ;;
        *) mpnn_die "LAUNCHER must be srun or horovodrun, got '$LAUNCHER'" ;;
    esac

    if [[ "${REQUEUE:-1}" == 1 ]]; then
        trap slurm_requeue USR1
    else
        # Caught, not left at its default action, which would end the job early.
        trap 'echo "${MPNN_SCRIPT:-${0##*/}}: time limit near; REQUEUE=0, not requeueing" >&2' USR1
    fi
    # Launch in the background and `wait`: bash runs a trap only after the foreground
    # command returns, whereas `wait` returns as soon as a trapped signal arrives.
    # After a trap `wait` returns 128+signal with the launcher still running: wait again
    # (after a requeue, until Slurm has stopped the step).
    mpnn_run "${launcher[@]}" "$@" &
    local pid=$! status
    while true; do
        status=0
        wait "$pid" || status=$?
        kill -0 "$pid" 2>/dev/null || break
    done
    return "$status"
}

# Shared set-up of the job scripts; sourced (not run) by every script under jobs/.
#
# A scheduler runs a copy of the batch script from its spool directory, so the scripts
# find this file through MPNN_HOME (default: the submit directory), never `dirname $0`.
#
# Reads (see jobs/README.md):
#   DATA        prepared data set: manifest.json or its directory (required)
#   CONFIG      JSON/YAML settings file for mpnn-train (optional)
#   RUN_DIR     run directory (default runs/<job id>, relative to the submit directory)
#   RESUME      1 (default): pass --resume, so a resubmitted or requeued job continues
#               from the last checkpoint in RUN_DIR; 0: do not
#   TRAIN_ARGS  extra mpnn-train flags, split on white space ("--epochs 4 --batch-size 64")
#   MPNN_HOME   the mpnn-hpc checkout (default: $SLURM_SUBMIT_DIR, $PBS_O_WORKDIR or $PWD)
#   MPNN_VENV   Python environment to activate (default $MPNN_HOME/.venv, or with
#               MPNN_ENGINE=tf-distribute $MPNN_HOME/.venv-current, if it exists, else the
#               active one); `none` when the site's modules or conda env are loaded already
#   MPNN_ENGINE horovod (default: horovodrun, srun --mpi=pmix, mpiexec start Horovod ranks) or
#               tf-distribute (MultiWorkerMirroredStrategy: each task goes through mpnn-launch,
#               which writes its TF_CONFIG; the current stack, MPNN_STACK=current)
# Sets: MPNN_HOME, MPNN_ENGINE, RUN_DIR (absolute), MPNN_ARGS (array of mpnn-train arguments).

# Print "<script>: message" on stderr and stop the job.
mpnn_die() {
    echo "${MPNN_SCRIPT:-${0##*/}}: $*" >&2
    exit 1
}

# Open MPI refuses to start as root unless told (containers, CI); only then. The one place
# for shell scripts; Python launches use mpnn.mpi_env.mpi_launch_environment.
mpnn_allow_mpi_as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    fi
}

# Enter the submit directory, activate the environment, check DATA and fix RUN_DIR.
mpnn_setup() {
    local submit_dir="${SLURM_SUBMIT_DIR:-${PBS_O_WORKDIR:-$PWD}}"
    cd "$submit_dir" || mpnn_die "cannot enter the submit directory $submit_dir"
    MPNN_HOME="$(cd "${MPNN_HOME:-$submit_dir}" && pwd)" || mpnn_die "MPNN_HOME=$MPNN_HOME is not a directory"
    export MPNN_HOME

    [[ -n "${DATA:-}" ]] || mpnn_die "set DATA to a prepared data set (manifest.json or its directory)," \
        "e.g. sbatch --export=ALL,DATA=work/water ... or qsub -v DATA=work/water ..."
    [[ -e "$DATA" ]] || mpnn_die "DATA=$DATA does not exist (relative paths start at $submit_dir)"
    DATA="$(realpath "$DATA")"

    MPNN_ENGINE="${MPNN_ENGINE:-horovod}"
    case "$MPNN_ENGINE" in
        horovod | tf-distribute) export MPNN_ENGINE ;;
        *) mpnn_die "MPNN_ENGINE must be horovod or tf-distribute, got '$MPNN_ENGINE'" ;;
    esac
    # MPNN_VENV=none: the caller loaded the environment. Unset: the engine's stack's venv in
    # $MPNN_HOME if there is one, else whatever environment is active already (e.g. sbatch
    # exported it).
    local default_venv="$MPNN_HOME/.venv"
    [[ $MPNN_ENGINE == tf-distribute && -d "$MPNN_HOME/.venv-current" ]] && default_venv="$MPNN_HOME/.venv-current"
    local venv="${MPNN_VENV:-$default_venv}"
    if [[ "$venv" != none && ( -n "${MPNN_VENV:-}" || -d "$venv" ) ]]; then
        [[ -f "$venv/bin/activate" ]] || mpnn_die "MPNN_VENV=$venv has no bin/activate"
        # shellcheck disable=SC1091
        source "$venv/bin/activate"
    fi
    command -v mpnn-train >/dev/null || mpnn_die "mpnn-train is not on PATH: run scripts/setup.sh in" \
        "$MPNN_HOME, point MPNN_VENV at your environment, or load it and set MPNN_VENV=none"

    # runs/<job id> (or a time stamp): mpnn.rundir holds the one list of schedulers' job-id variables.
    RUN_DIR="${RUN_DIR:-$(python -c 'from mpnn.rundir import default_run_dir; print(default_run_dir())')}" \
        || mpnn_die "cannot import mpnn from the active environment"
    # Absolute, so that ranks started in another directory on another node agree.
    RUN_DIR="$(realpath -m "$RUN_DIR")"
    export DATA RUN_DIR

    mpnn_allow_mpi_as_root
}

# MPNN_ARGS = data, run dir, config, resume, then the script's own flags ("$@"), then
# TRAIN_ARGS, so that a user's TRAIN_ARGS override a script's defaults (argparse: last wins).
mpnn_train_args() {
    local extra=()
    read -r -a extra <<< "${TRAIN_ARGS:-}"
    MPNN_ARGS=(--data "$DATA" --run-dir "$RUN_DIR" --engine "${MPNN_ENGINE:-horovod}")
    if [[ -n "${CONFIG:-}" ]]; then
        [[ -f "$CONFIG" ]] || mpnn_die "CONFIG=$CONFIG is not a file"
        MPNN_ARGS+=(--config "$(realpath "$CONFIG")")
    fi
    if [[ "${RESUME:-1}" == 1 ]]; then
        MPNN_ARGS+=(--resume)
    fi
    MPNN_ARGS+=("$@" "${extra[@]}")
}

# CPU ranks: Open MPI's progress loop yields the core while a rank waits (in Horovod's
# background thread), instead of spinning on the core that the rank's compute thread is
# bound to. Measured on 2 cores (RESULTS.md, "Weak scaling on 2 ranks"): 2 ranks x 1 thread went from
# 56% to about 90% of twice the 1-rank rate at batch 256. Other MPIs ignore the variable.
mpnn_cpu_rank_defaults() {
    export OMPI_MCA_mpi_yield_when_idle="${OMPI_MCA_mpi_yield_when_idle:-1}"
}

# Usage: mpnn_task_prefix MODE -- sets MPNN_TASK, what goes before the command each task of a
# scheduler's launcher runs: nothing for Horovod; for tf-distribute `mpnn-launch --MODE`
# (slurm, pbs), which writes the task's TF_CONFIG and becomes the command.
mpnn_task_prefix() {
    MPNN_TASK=()
    if [[ ${MPNN_ENGINE:-horovod} == tf-distribute ]]; then
        MPNN_TASK=(mpnn-launch "--$1")
    fi
}

# Log the command on stderr (quoted so it can be pasted into a shell), then run it.
mpnn_run() {
    echo "${MPNN_SCRIPT:-${0##*/}}: on $(hostname -s), run dir $RUN_DIR" >&2
    echo "+ $(printf '%q ' "$@")" >&2
    "$@"
}

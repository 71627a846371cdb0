#!/usr/bin/env bash
# Set up (if needed) and run the test suite: the README's test command and CI's.
#
# 1. The full suite ("$@" passed to pytest) on the default stack, .venv (TensorFlow 2.15 +
#    Horovod), as always.
# 2. Then the current stack's share on .venv-current (TensorFlow 2.21 + tf-keras, the
#    tf-distribute engine): its unit tier, two tf-distribute workers against two Horovod
#    ranks (test_stacks), the engine and launcher tests, one job through the test Slurm
#    cluster and the PBS script under mpiexec. MPNN_TEST_CURRENT=0 skips it (e.g. on a machine
#    with neither Python 3.12 nor 3.11 for it).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo_root/scripts/setup.sh"
current="${MPNN_TEST_CURRENT:-1}"
if [[ $current == 1 ]]; then
    MPNN_STACK=current bash "$repo_root/scripts/setup.sh"
fi
cd "$repo_root"
# The cluster tier (tests/jobs) starts a real one-node Slurm: install it where we may.
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "[test] installing slurm-wlm and munge for the cluster tests" >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; } \
            || echo "[test] could not install Slurm: the cluster tests will be skipped" >&2
    fi
fi
.venv/bin/python -m pytest "$@"
if [[ $current == 1 ]]; then
    echo "[test] the current stack (.venv-current): unit tier, then its integration and cluster share" >&2
    .venv-current/bin/python -m pytest -m unit -p no:cacheprovider
    .venv-current/bin/python -m pytest -p no:cacheprovider \
        tests/mpnn/test_stacks.py::test_two_tf_distribute_workers_train_as_two_horovod_ranks \
        tests/mpnn/test_engines.py tests/mpnn/test_launch.py \
        tests/jobs/test_slurm.py::test_sbatch_cpu_script tests/jobs/test_pbs.py
fi

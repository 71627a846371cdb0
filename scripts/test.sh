#!/usr/bin/env bash
# Set up (if needed) and run the test suite: the README's test command and CI's.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo_root/scripts/setup.sh"
cd "$repo_root"
# The cluster tier (tests/jobs) starts a real one-node Slurm: install it where we may.
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "[test] installing slurm-wlm and munge for the cluster tests" >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; } \
            || echo "[test] could not install Slurm: the cluster tests will be skipped" >&2
    fi
fi
exec .venv/bin/python -m pytest "$@"

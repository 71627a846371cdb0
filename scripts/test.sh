#!/usr/bin/env bash
# Set up (if needed) and run the test suite: the README's test command and CI's.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo_root/scripts/setup.sh"
cd "$repo_root"
exec .venv/bin/python -m pytest "$@"

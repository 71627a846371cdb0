#!/usr/bin/env bash
# Set up mpnn-hpc: system packages when missing, a venv, TensorFlow, the engine, the project.
# Two stacks (MPNN_STACK), which can live side by side in one clone:
#   horovod (default)  .venv/          Python 3.11, TensorFlow 2.15.1, Horovod 0.28.1
#                                       (TensorFlow + Gloo + MPI); both engines
#   current            .venv-current/  Python 3.12 (else 3.11), TensorFlow 2.21 +
#                                       tf-keras 2.21, no Horovod; the tf-distribute engine
#
# Idempotent: when .venv is already complete for this setup.cfg it returns in seconds.
# pip's wheel cache (~/.cache/pip) keeps the Horovod and mpi4py builds: a fresh clone
# on the same machine re-installs them from the cached wheels in about a minute.
#
# Environment:
#   MPNN_STACK    horovod (default) or current
#   MPNN_EXTRAS   extras to install (default "cpu,test,notebooks"); exactly one of "cpu" (tensorflow-cpu)
#                 and "gpu" (tensorflow[and-cuda]) picks the TensorFlow build; "cpu" is added when
#                 neither is named. On the current stack they stand for "current" and "current-gpu".
#   PYTHON        interpreter to build the venv from (default: python3.11 for horovod; for
#                 current the first of python3.12, python3.11 that runs, on PATH or under pyenv;
#                 not 3.13 yet: see setup.cfg's python_requires)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
stack="${MPNN_STACK:-horovod}"
extras="${MPNN_EXTRAS:-cpu,test,notebooks}"
case ",$extras," in
    *,cpu,*,gpu,* | *,gpu,*,cpu,*) echo "[setup] ERROR: MPNN_EXTRAS names both cpu and gpu" >&2; exit 1 ;;
    *,cpu,* | *,gpu,*) ;;
    *) extras="cpu,$extras" ;;
esac

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# The first Python of "$@" (versions like 3.12) that runs: pythonX.Y on PATH, else pyenv's.
find_python() {
    local version candidate
    for version in "$@"; do
        for candidate in "python$version" "$(pyenv root 2>/dev/null)/versions/$version"*/bin/"python$version"; do
            if "$candidate" -c 'import sys' >/dev/null 2>&1; then
                command -v "$candidate" 2>/dev/null || echo "$candidate"
                return 0
            fi
        done
    done
    return 1
}

case "$stack" in
    horovod)
        venv="$repo_root/.venv"
        python_bin="${PYTHON:-python3.11}"
        ;;
    current)
        venv="$repo_root/.venv-current"
        python_bin="${PYTHON:-$(find_python 3.12 3.11)}" \
            || die "MPNN_STACK=current needs Python 3.12 or 3.11: install one (e.g. 'module load python/3.12' on a
  cluster, pyenv or uv on Debian 13 / Ubuntu 24.04, whose system Python is 3.13) or point PYTHON at it"
        ;;
    *) die "MPNN_STACK must be horovod or current, got '$stack'" ;;
esac

# ---------------------------------------------------------------- system packages
missing_debs=()
command -v mpirun >/dev/null 2>&1 && command -v mpicc >/dev/null 2>&1 \
    || missing_debs+=(libopenmpi-dev openmpi-bin)
command -v g++ >/dev/null 2>&1 || missing_debs+=(g++)
if [[ $stack == horovod ]]; then
    command -v cmake >/dev/null 2>&1 || missing_debs+=(cmake)
fi
if [[ $stack == current ]]; then
    :  # find_python checked that it runs; mpi4py's build needs its headers (checked below by pip)
elif ! command -v "$python_bin" >/dev/null 2>&1; then
    missing_debs+=(python3.11 python3.11-venv python3.11-dev)
else
    # Debian splits venv/ensurepip and the C headers (needed to build Horovod, mpi4py) out.
    "$python_bin" -c "import ensurepip, venv" 2>/dev/null || missing_debs+=(python3.11-venv)
    "$python_bin" -c "import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))" \
        2>/dev/null || missing_debs+=(python3.11-dev)
fi

if ((${#missing_debs[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing Debian packages: ${missing_debs[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing_debs[@]}" >/dev/null
    else
        die "missing: ${missing_debs[*]}. On a cluster load them as modules
  (e.g. 'module load openmpi cmake gcc python/3.11'); on Debian/Ubuntu run as root:
  apt-get install ${missing_debs[*]}"
    fi
fi

# ---------------------------------------------------------------- venv up to date?
stamp="$venv/.mpnn-setup-stamp"
want_stamp="$(cat "$repo_root/setup.cfg" "$repo_root/pyproject.toml" "${BASH_SOURCE[0]}" \
    | sha256sum | cut -c1-16)-$extras"

check_build() {
    local out
    if [[ $stack == current ]]; then
        # tf.keras must be tf-keras (Keras 2 API), not Keras 3; Horovod must be absent.
        "$venv/bin/python" -c 'import mpnn, tensorflow as tf, importlib.util as u
assert tf.keras.Model.__module__.startswith("tf_keras"), tf.keras.Model.__module__
assert u.find_spec("horovod") is None, "horovod is installed"' >&2 || return 1
        return 0
    fi
    out="$("$venv/bin/horovodrun" --check-build 2>&1)" || { echo "$out" >&2; return 1; }
    # Lines look like "    [X] TensorFlow"; an empty box means the framework is missing.
    for want in TensorFlow MPI Gloo; do
        grep -qE "\[X\] $want\$" <<<"$out" || { echo "$out" >&2; return 1; }
    done
}

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]] && check_build 2>/dev/null; then
    log "${venv##*/} is up to date ($stack stack)"
    exit 0
fi

# ---------------------------------------------------------------- venv + packages
if [[ ! -x "$venv/bin/python" ]]; then
    log "creating $venv with $("$python_bin" --version)"
    "$python_bin" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip setuptools wheel
log "$stack stack in ${venv##*/} with $("$venv/bin/python" --version) ($python_bin)"
mpi4py_pin="$(grep -oE 'mpi4py==[0-9.]+' "$repo_root/setup.cfg" | head -1)"

if [[ $stack == current ]]; then
    # The stack's extra for the TensorFlow build asked for: cpu -> current, gpu -> current-gpu.
    current_extras="$(sed -e 's/\(^\|,\)cpu\(,\|$\)/\1current\2/' -e 's/\(^\|,\)gpu\(,\|$\)/\1current-gpu\2/' <<<"$extras")"
    log "installing $mpi4py_pin (compiled against the system MPI the first time)"
    CFLAGS="-O1 -g0" "${pip[@]}" install "$mpi4py_pin"
    log "installing mpnn-hpc[$current_extras]"
    "${pip[@]}" install -e "$repo_root[$current_extras]"
    check_build || die "${venv##*/}: tf.keras is not tf-keras, or Horovod is installed (output above)"
    echo "$want_stamp" >"$stamp"
    log "done: activate with 'source .venv-current/bin/activate'"
    exit 0
fi

# Horovod compiles against the TensorFlow in the venv, so TensorFlow goes first and the
# Horovod build runs without build isolation. The framework pins are read from setup.cfg.
# The TensorFlow build is the one the chosen extra (cpu or gpu) pins.
tf_extra=cpu
[[ ",$extras," == *",gpu,"* ]] && tf_extra=gpu
tf_pin="$(sed -n "/^$tf_extra =/{n;s/^ *//;p}" "$repo_root/setup.cfg")"
[[ -n "$tf_pin" ]] || die "setup.cfg has no [options.extras_require] $tf_extra pin"
hvd_pin="$(grep -oE 'horovod==[0-9.]+' "$repo_root/setup.cfg" | head -1)"
# The two builds share their files: switching an existing venv from one to the other would
# leave a mix, so ask for a fresh one instead of uninstalling anything.
other_tf=tensorflow-cpu
[[ $tf_extra == cpu ]] && other_tf=tensorflow
if "$venv/bin/python" -m pip show -q "$other_tf" 2>/dev/null; then
    die "$venv holds $other_tf, not the $tf_extra build asked for: remove $venv and run this script again"
fi
log "installing $tf_pin"
"${pip[@]}" install "$tf_pin" cmake

log "building $hvd_pin (TensorFlow + Gloo + MPI; about 2 minutes the first time)"
export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 \
       HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
# On GPU machines export HOROVOD_GPU_OPERATIONS=NCCL (and HOROVOD_NCCL_HOME) before
# running this script; see jobs/README.md.
"${pip[@]}" install --no-build-isolation "$hvd_pin"

# mpi4py compiles one very large C file; -O1 without debug info builds it in a fraction of
# the default (-O3 -g) time, and its speed does not matter here (it only coordinates
# data_prep ranks).
log "installing $mpi4py_pin (compiled against the system MPI the first time)"
CFLAGS="-O1 -g0" "${pip[@]}" install "$mpi4py_pin"

log "installing mpnn-hpc[$extras]"
"${pip[@]}" install -e "$repo_root[$extras]"
check_build || die "horovodrun --check-build does not list TensorFlow, MPI and Gloo (output above).
  Rebuild with: $venv/bin/python -m pip install --no-cache-dir --force-reinstall --no-build-isolation $hvd_pin"
echo "$want_stamp" >"$stamp"
log "done: activate with 'source .venv/bin/activate'"

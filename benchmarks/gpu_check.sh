#!/usr/bin/env bash
# GPU readiness check (issue 27): run from a fresh copy of the tree on a machine with a CUDA GPU.
#
#   bash benchmarks/gpu_check.sh
#
# In at most 8 minutes (PAINTERS_GPU_CHECK_SECONDS) it makes a virtual environment, installs a
# CUDA build of torch and the project with its test extras, runs `pytest -m gpu` (tests/test_gpu.py:
# every CUDA path on small models) and the throughput benchmark (benchmarks/gpu_throughput.py: a
# Llama-2-7B-shaped model in bf16), and prints a summary whose last line says what passed, e.g.
#
#   gpu_check: pytest -m gpu 32 passed 0 failed 1 skipped; throughput ok
#
# It exits non-zero if any step failed. Every step has a time limit; each step's output is also
# written to PAINTERS_GPU_CHECK_LOGS (default results/gpu_check/).
#
# torch, in this order:
#   - the interpreter (PAINTERS_PYTHON, default python3) already has a CUDA torch that sees the GPU:
#     the environment sees it (a venv with its site-packages; nothing is downloaded);
#   - `pip install torch==PAINTERS_TORCH_VERSION` (default 2.14.1) as pip is configured: on machines
#     that keep wheels on their own disk (a local index or find-links, no internet needed) that
#     wheel is a CUDA build, as PyPI's Linux wheels are;
#   - `pip install torch --index-url PAINTERS_TORCH_INDEX_URL` (default
#     https://download.pytorch.org/whl/cu124; e.g. .../cu121 for an older driver), when the one
#     before is not a CUDA build or is built for a newer CUDA than the driver runs.
#   PAINTERS_TORCH_SPEC (e.g. "torch==2.5.1") replaces the version of the last two.
# A node without internet: give PAINTERS_WHEELS=DIR, a folder of wheels of what the environment lacks
# (lm-eval and its needs, ...): they and the project are installed from it without dependency
# resolution (--no-index --no-deps), and only tests/test_gpu.py is collected (the other test
# modules need every dependency: polars, snakemake, ...). PAINTERS_GPU_TESTS overrides what pytest
# collects; PAINTERS_THROUGHPUT_ARGS adds arguments to the benchmark; PAINTERS_GPU_VENV names the
# environment (default .venv-gpu; an existing one is reused as it is: nothing is installed into it).
# PAINTERS_GPU_CHECK_CPU=1: a dry run on a machine without a GPU (the gpu tests skip, the benchmark
# runs --tiny); it checks this script, not a GPU.

set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

BUDGET=${PAINTERS_GPU_CHECK_SECONDS:-480}
PY=${PAINTERS_PYTHON:-python3}
VENV=${PAINTERS_GPU_VENV:-.venv-gpu}
TORCH_VERSION=${PAINTERS_TORCH_VERSION:-2.14.1}
TORCH_INDEX=${PAINTERS_TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu124}
TORCH_SPEC=${PAINTERS_TORCH_SPEC:-}
WHEELS=${PAINTERS_WHEELS:-}
TESTS=${PAINTERS_GPU_TESTS:-}
THROUGHPUT_ARGS=${PAINTERS_THROUGHPUT_ARGS:-}
LOGS=${PAINTERS_GPU_CHECK_LOGS:-results/gpu_check}
DRY=${PAINTERS_GPU_CHECK_CPU:-0}
THROUGHPUT_RESERVE=150  # seconds kept for the benchmark while the tests run

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PIP_DISABLE_PIP_VERSION_CHECK=1
mkdir -p "$LOGS" || exit 2
STARTED=$SECONDS
declare -a SUMMARY=()
FAILED=0

note() { SUMMARY+=("$1"); echo "gpu_check: $1"; }
left() { echo $(( BUDGET - (SECONDS - STARTED) )); }

# step NAME CAP COMMAND...: run COMMAND with at most CAP seconds (and never past the budget), its
# output shown and kept in LOGS/NAME.log; returns its exit status (124: out of time)
step() {
  local name=$1 cap=$2 limit rc begun=$SECONDS
  shift 2
  limit=$(left)
  (( cap < limit )) && limit=$cap
  if (( limit < 5 )); then
    echo "=== $name: no time left of the ${BUDGET} s budget" | tee "$LOGS/$name.log"
    return 124
  fi
  echo "=== $name (at most ${limit} s): $*"
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
  rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $(( SECONDS - begun )) s"
  return "$rc"
}

vpython() { "$VENV/bin/python" "$@"; }
GPU_LISTED=0  # the driver lists a GPU: a CUDA torch must then also see it (a build newer than the driver does not)
command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU' && GPU_LISTED=1
# has_cuda_torch PYTHON: its torch is a CUDA build that sees this machine's GPU (if the driver lists one)
has_cuda_torch() {
  "$1" -c "import sys, torch; sys.exit(0 if torch.version.cuda and (torch.cuda.is_available() or not $GPU_LISTED) else 1)" \
    >/dev/null 2>&1
}

# ---- 1. the environment
REUSED=0
if [[ -x "$VENV/bin/python" ]]; then
  REUSED=1
  note "environment: reusing $VENV as it is (nothing is installed into it)"
else
  if ! command -v "$PY" >/dev/null; then
    note "environment: no interpreter $PY (set PAINTERS_PYTHON)"; echo "gpu_check: install failed; nothing ran"; exit 2
  fi
  inherit=0
  has_cuda_torch "$PY" && inherit=1
  if (( inherit )); then
    step venv 60 "$PY" -m venv --system-site-packages "$VENV" || { note "environment: venv failed"; FAILED=1; }
    # an interpreter that is itself a venv: --system-site-packages would show the base Python's
    # packages, not its own; a .pth file makes its site-packages (its CUDA torch) visible after ours
    if [[ -x "$VENV/bin/python" ]] && "$PY" -c 'import sys; sys.exit(0 if sys.prefix != sys.base_prefix else 1)'; then
      own=$(vpython -c 'import site; print(site.getsitepackages()[0])')
      "$PY" -c 'import site; print("\n".join(site.getsitepackages()))' > "$own/_painters_gpu_check_base.pth"
    fi
  else
    step venv 60 "$PY" -m venv "$VENV" || { note "environment: venv failed"; FAILED=1; }
  fi
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "gpu_check: install failed (no environment at $VENV); nothing ran"; exit 2
fi
PIP=("$VENV/bin/python" -m pip)

# ---- 2. a CUDA torch
if has_cuda_torch "$VENV/bin/python"; then
  note "torch: $(vpython -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)') already there"
elif (( REUSED )); then
  note "torch: $(vpython -c 'import torch; print(torch.__version__)' 2>&1 | tail -n 1) in the reused environment, no CUDA build"
  [[ "$DRY" == 1 ]] || FAILED=1
elif [[ -n "$WHEELS" ]]; then
  note "torch: none with CUDA in the environment, and PAINTERS_WHEELS means no index: give a CUDA torch"
  FAILED=1
else
  version_spec=${TORCH_SPEC:-torch==$TORCH_VERSION}
  step torch 240 "${PIP[@]}" install --retries 1 --timeout 30 "$version_spec"
  if ! has_cuda_torch "$VENV/bin/python"; then
    # a CPU build, or a CUDA build newer than the driver, if that is what came
    "${PIP[@]}" uninstall -q -y torch >/dev/null 2>&1
    step torch_index 300 "${PIP[@]}" install --retries 1 --timeout 30 "${TORCH_SPEC:-torch}" --index-url "$TORCH_INDEX"
  fi
  if has_cuda_torch "$VENV/bin/python"; then
    note "torch: installed $(vpython -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
  else
    note "torch: no CUDA build that sees the GPU could be installed ($version_spec as pip is configured, then $TORCH_INDEX)"
    [[ "$DRY" == 1 ]] || FAILED=1
  fi
fi

# ---- 3. the project and its test extras
if (( REUSED )); then
  :
elif [[ -n "$WHEELS" ]]; then
  shopt -s nullglob
  wheels=("$WHEELS"/*.whl)
  shopt -u nullglob
  if (( ${#wheels[@]} )); then
    step wheels 120 "${PIP[@]}" install -q --no-index --no-deps --no-cache-dir "${wheels[@]}" || FAILED=1
  fi
  step install 120 "${PIP[@]}" install -q --no-index --no-deps --no-build-isolation -e . || FAILED=1
else
  step install 240 "${PIP[@]}" install --retries 1 --timeout 30 -e '.[test]' || FAILED=1
fi
[[ -n "$WHEELS" ]] && TESTS=${TESTS:-tests/test_gpu.py}
if step imports 60 "$VENV/bin/python" -c '
import lm_eval, pytest, torch, transformers
import painters.engine, painters.evaluate, painters.generation, painters.glue.finetune, painters.layershuffle.training
print("torch", torch.__version__, "transformers", transformers.__version__, "lm-eval", lm_eval.__version__)'; then
  note "install: ok ($(tail -n 1 "$LOGS/imports.log"))"
else
  note "install: the project does not import (see $LOGS/imports.log)"
  FAILED=1
fi

# ---- 4. the GPU
GPU_OK=0
if step gpu 60 "$VENV/bin/python" -c '
import torch
assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA GPU"
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}")'; then
  GPU_OK=1
  note "gpu: $(head -n 1 "$LOGS/gpu.log"); $(tail -n 1 "$LOGS/gpu.log")"
elif [[ "$DRY" == 1 ]]; then
  note "gpu: none (PAINTERS_GPU_CHECK_CPU=1: a dry run, the gpu tests skip)"
else
  note "gpu: none visible (see $LOGS/gpu.log)"
  FAILED=1
fi
command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null

# ---- 5. the gpu tests
PASSED=0 FAILURES=0 SKIPPED=0 ERRORS=0
limit=$(( $(left) - THROUGHPUT_RESERVE ))
(( limit > 300 )) && limit=300
(( limit < 60 )) && limit=60
# shellcheck disable=SC2086
step pytest "$limit" "$VENV/bin/python" -m pytest -m gpu -q -rsfE -p no:cacheprovider $TESTS
PYTEST_RC=$?
closing=$(grep -E '[0-9]+ (passed|failed|skipped|error|errors|deselected)' "$LOGS/pytest.log" | tail -n 1)
count() { grep -Eo "[0-9]+ $1" <<<"$closing" | grep -Eo '[0-9]+' | head -n 1; }
PASSED=$(count passed); PASSED=${PASSED:-0}
FAILURES=$(count failed); FAILURES=${FAILURES:-0}
SKIPPED=$(count skipped); SKIPPED=${SKIPPED:-0}
ERRORS=$(count 'errors?'); ERRORS=${ERRORS:-0}
note "pytest -m gpu: ${closing:-no closing line} (exit $PYTEST_RC)"
if (( PYTEST_RC != 0 || FAILURES > 0 || ERRORS > 0 )); then
  FAILED=1
elif (( GPU_OK && PASSED == 0 )); then
  note "pytest -m gpu: a GPU is there but no gpu test ran"; FAILED=1
fi

# ---- 6. the throughput benchmark
size=""
(( GPU_OK )) || size=--tiny
# shellcheck disable=SC2086
if step throughput 300 "$VENV/bin/python" benchmarks/gpu_throughput.py $size --json "$LOGS/throughput.json" $THROUGHPUT_ARGS; then
  THROUGHPUT="ok${size:+ ($size)}"
else
  THROUGHPUT="failed (exit $?, see $LOGS/throughput.log)"
  FAILED=1
fi

# ---- summary
echo
echo "==== gpu_check summary ($(( SECONDS - STARTED )) s of ${BUDGET} s)"
for line in "${SUMMARY[@]}"; do echo "  $line"; done
if [[ -s "$LOGS/throughput.log" ]]; then
  echo "  throughput:"
  grep -E '^(gpu_throughput|plans|loglikelihood|generation|  )' "$LOGS/throughput.log" | grep -v '^  \[painters\]' | sed 's/^/    /'
fi
memory=$(grep -Eo 'generation memory (OVER its budget[^;]*|within its budget)' "$LOGS/throughput.log" 2>/dev/null | tail -n 1)
echo "gpu_check: pytest -m gpu $PASSED passed $FAILURES failed $SKIPPED skipped$( (( ERRORS )) && echo " $ERRORS errors"); throughput $THROUGHPUT${memory:+ ($memory)}$( (( GPU_OK )) || echo '; no CUDA GPU')"
exit $FAILED

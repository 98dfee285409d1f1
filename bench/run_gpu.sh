#!/usr/bin/env bash
# The GPU benchmark in one device call of under 5 minutes (see bench/README.md).
#
#   bench/run_gpu.sh --prepare   here, with PyPI: download the wheels the device lacks into
#                                bench/wheels (git-ignored; carried to the device)
#   bench/run_gpu.sh [ARGS]      on the device (no internet): install those wheels next to the
#                                existing torch, print the machine, run the benchmark into $OUT
#                                (ARGS go to gpu_bench.py, e.g. --variants default,compiled)
#   BENCH=tools bench/run_gpu.sh  the same install, then bench/tools_bench.py instead: ms per
#                                image tool beside /imagine, U at 2048x2048 with its peak memory
#                                (~1 minute of device time)
#
# Time (device side): TOTAL_S (default 280) is what the whole script may take; the benchmark
# gets BUDGET_S = min(240, what is left after the install - 40) and is killed at BUDGET_S + 35
# at the latest (each table row is written as soon as it is measured, so a cut run reports).
set -euo pipefail

SECONDS=0
cd "$(dirname "$0")/.."
WHEELS=bench/wheels

# The versions the dev venv runs the tests with, and their whole dependency closure except
# torch (and its own dependencies), numpy and pillow: every torch image has those, and 47 MB
# of wheels would break the 64 MiB a device call carries. The offline install needs no index.
PINNED=(
    diffusers==0.42.1 transformers==5.25.0 peft==0.21.2 accelerate==1.16.0
    safetensors==0.8.0 huggingface-hub==2.4.0 tokenizers==0.23.3 hf-xet==1.8.0
    kernels==0.19.1 tomlkit==0.15.3
    pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 python-dotenv==1.2.4
    typing-inspection==0.4.5 typing-extensions==4.16.0 annotated-types==0.8.0
    annotated-doc==0.0.7 lazy-importer==0.1.0 importlib-metadata==10.2.0 zipp==4.1.2
    httpx2==2.16.2 httpcore2==2.16.2 h11==0.16.0 anyio==4.16.0 idna==3.20
    certifi==2026.10.19.post1 charset-normalizer==3.5.3 urllib3==2.8.0 requests==2.34.2
    truststore==0.10.5 filelock==4.3.2 fsspec==2026.9.0 packaging==26.4 tqdm==4.70.1
    pyyaml==6.0.4 regex==2026.11.19 psutil==7.2.2
    click==8.5.1 typer==0.29.2 shellingham==1.5.4 rich==15.0.0 markdown-it-py==4.3.0
    mdurl==0.1.2 pygments==2.21.0
    fpng==0.1.0 lazy-loader==0.6
)
# torchao's compatibility table: 0.18.0 is built for torch 2.11 (and dropped torch < 2.11).
TORCHAO=torchao==0.18.0
TORCHAO_TORCH=2.11
# What the benchmark imports; pip resolves the rest from $WHEELS (or keeps what is installed).
TOP=(
    diffusers==0.42.1 transformers==5.25.0 peft==0.21.2 accelerate==1.16.0
    pydantic-settings==2.16.3 fpng==0.1.0
)

PY="${PYTHON:-python3}"  # on the device images, python3 is the one that holds torch

if [[ "${1:-}" == "--prepare" ]]; then
    # The wheels must never be committed; .gitignore ignores them (nothing is written to .git).
    if ! git check-ignore -q "$WHEELS/probe.whl"; then
        echo "$WHEELS is not git-ignored: add /$WHEELS/ to .gitignore first" >&2
        exit 1
    fi
    rm -rf "$WHEELS"
    mkdir -p "$WHEELS"
    # The device runs Python 3.12 (torch 2.11): binary wheels for cp312, abi3 and pure Python.
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" \
        --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_24_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_28_x86_64 --platform any \
        "${PINNED[@]}" "$TORCHAO"
    du -sh "$WHEELS"
    ls "$WHEELS"
    exit 0
fi

TOTAL_S="${TOTAL_S:-280}"
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1

echo "== machine"
nvidia-smi || true
"$PY" -V
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA')"
TORCH_VERSION="$("$PY" -c "import torch; print(torch.__version__)")"

echo "== offline install from $WHEELS (torch stays as it is)"
echo "torch==${TORCH_VERSION}" > /tmp/bench_torch_pin.txt
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$PY" -m pip install -q --no-index --find-links "$WHEELS" -c /tmp/bench_torch_pin.txt "${TOP[@]}"; then
    echo "resolver install failed; installing the pinned closure without dependency checks"
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps "${PINNED[@]}" || true
fi
# torchao only serves the fp8 variants: only onto the torch it is built for, and never let it
# pull or move anything.
if [[ "$TORCH_VERSION" == "$TORCHAO_TORCH".* ]]; then
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps "$TORCHAO" \
        || echo "torchao: not installed (fp8 variants report unavailable)"
    # diffusers probes torchao at import: a torchao that does not import must not break that.
    if ! "$PY" -c "import torchao, diffusers" >/dev/null 2>&1; then
        echo "torchao does not import with this torch: removed (fp8 variants report unavailable)"
        "$PY" -m pip uninstall -q -y torchao || true
    fi
else
    echo "torch $TORCH_VERSION is not $TORCHAO_TORCH.x, which $TORCHAO needs: torchao skipped" \
        "(fp8 variants report unavailable)"
fi
"$PY" -c "import diffusers, transformers, peft; print('diffusers', diffusers.__version__, \
'transformers', transformers.__version__, 'peft', peft.__version__)"
"$PY" -c "from engine.encoding import png_encoder; print('PNG encoder:', png_encoder())" \
    || echo "PNG encoder: engine.encoding does not import"

echo "== benchmark (install took ${SECONDS} s)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
LEFT=$((TOTAL_S - SECONDS))
DEFAULT_BUDGET=$((LEFT - 40))
((DEFAULT_BUDGET > 240)) && DEFAULT_BUDGET=240
BUDGET_S="${BUDGET_S:-$DEFAULT_BUDGET}"
# A variant that overruns its estimate must not cost the whole call: the table rows measured
# so far are already in table.md, gpu.json and gpu.md when the timeout strikes.
set +e
if [[ "${BENCH:-gpu}" == "tools" ]]; then
    timeout -k 5 $((BUDGET_S + 35)) "$PY" bench/tools_bench.py --device cuda \
        --out "$OUT/tools.json" "$@" | tee "$OUT/tools.md"
else
    timeout -k 5 $((BUDGET_S + 35)) "$PY" bench/gpu_bench.py --device cuda --budget-s "$BUDGET_S" \
        --out "$OUT/gpu.json" "$@" | tee "$OUT/table.md"
fi
rc=${PIPESTATUS[0]}
set -e
if ((rc == 124 || rc == 137)); then
    echo "== benchmark stopped by its timeout ($((BUDGET_S + 35)) s): the rows above are what it measured"
    rc=0
fi
echo "== done in ${SECONDS} s (rc $rc)"
exit "$rc"

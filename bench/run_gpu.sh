#!/usr/bin/env bash
# The GPU benchmark in one device call (see bench/README.md).
#
#   bench/run_gpu.sh --prepare   here, with PyPI: download the wheels the device lacks into
#                                bench/wheels (git-ignored; carried to the device)
#   bench/run_gpu.sh [ARGS]      on the device (no internet): install those wheels next to the
#                                existing torch, print the machine, run the benchmark into $OUT
#                                (ARGS go to gpu_bench.py, e.g. --variants default,all_max_autotune)
set -euo pipefail

cd "$(dirname "$0")/.."
WHEELS=bench/wheels

# The versions this repo is tested with (pyproject.toml + the dev venv), and their whole
# dependency closure except torch, numpy and pillow (every torch image has those; 47 MB of
# wheels would break the 64 MiB a device call carries), so the offline install needs no index.
PINNED=(
    diffusers==0.42.1 transformers==5.23.0 peft==0.21.2 accelerate==1.15.0
    safetensors==0.8.0 huggingface-hub==2.4.0 tokenizers==0.23.3 hf-xet==1.8.0
    pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 python-dotenv==1.2.4
    typing-inspection==0.4.5 typing-extensions==4.16.0 annotated-types==0.8.0
    annotated-doc==0.0.7 lazy-importer==0.1.0 importlib-metadata==10.2.0 zipp==4.1.2
    httpx2==2.16.2 httpcore2==2.16.2 h11==0.16.0 anyio==4.16.0 idna==3.20
    certifi==2026.10.19.post1 charset-normalizer==3.5.3 urllib3==2.8.0 requests==2.34.2
    truststore==0.10.5 filelock==4.3.1 fsspec==2026.9.0 packaging==26.4 tqdm==4.70.1
    pyyaml==6.0.4 regex==2026.11.19 psutil==7.2.2
    click==8.5.1 typer==0.29.2 shellingham==1.5.4 rich==15.0.0 markdown-it-py==4.3.0
    mdurl==0.1.2 pygments==2.21.0
)
TORCHAO=torchao==0.18.0
# What the benchmark imports; pip resolves the rest from $WHEELS (or keeps what is installed).
TOP=(diffusers==0.42.1 transformers==5.23.0 peft==0.21.2 accelerate==1.15.0 pydantic-settings)

PY="${PYTHON:-python3}"  # on the device images, python3 is the one that holds torch

if [[ "${1:-}" == "--prepare" ]]; then
    # The wheels must never be committed, but the device tool carries only ignored paths.
    grep -qxF "/$WHEELS/" .git/info/exclude 2>/dev/null || echo "/$WHEELS/" >> .git/info/exclude
    rm -rf "$WHEELS"
    mkdir -p "$WHEELS"
    # The device's Python version is unknown: binary wheels for both 3.11 and 3.12.
    for py in 3.11 3.12; do
        abi="cp${py/./}"
        "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" \
            --python-version "$py" --implementation cp --abi "$abi" --abi abi3 --abi none \
            --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux_2_28_x86_64 --platform any \
            "${PINNED[@]}" "$TORCHAO"
    done
    du -sh "$WHEELS"
    ls "$WHEELS"
    exit 0
fi

OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1

echo "== machine"
nvidia-smi || true
"$PY" -V
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA')"

echo "== offline install from $WHEELS (torch stays as it is)"
"$PY" -c "import torch; print('torch==' + torch.__version__)" > /tmp/bench_torch_pin.txt
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$PY" -m pip install -q --no-index --find-links "$WHEELS" -c /tmp/bench_torch_pin.txt "${TOP[@]}"; then
    echo "resolver install failed; installing the pinned closure without dependency checks"
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps "${PINNED[@]}" || true
fi
# torchao only serves the fp8 variants: never let it pull or move anything.
"$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps "$TORCHAO" || echo "torchao: not installed"
# diffusers probes torchao at import: a torchao built for another torch must not break that.
if ! "$PY" -c "import torchao, diffusers" >/dev/null 2>&1; then
    echo "torchao does not import with this torch: removed (fp8 variants report unavailable)"
    "$PY" -m pip uninstall -q -y torchao || true
fi
"$PY" -c "import diffusers, transformers, peft; print('diffusers', diffusers.__version__, \
'transformers', transformers.__version__, 'peft', peft.__version__)"

echo "== benchmark"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
BUDGET_S="${BUDGET_S:-420}"
# A variant that overruns its estimate must not cost the whole call: stop well before the
# device tool's limit (gpu.json and gpu.md are rewritten after every variant).
export PYTHONUNBUFFERED=1
timeout -k 10 $((BUDGET_S + 90)) "$PY" bench/gpu_bench.py --device cuda --budget-s "$BUDGET_S" \
    --out "$OUT/gpu.json" "$@" | tee "$OUT/table.md"

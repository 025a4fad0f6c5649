#!/usr/bin/env bash
# GPU check, one CUDA GPU, < 5 min: environment, ResNet-50 256x128 AMP training throughput, a 2-stage smoke run on
# synthetic data (CUDA + AMP end to end, both stages, evaluation, checkpoints), and the clustering benchmark
# (faiss GPU k-NN when faiss sees the GPU). Everything is also written to outputs/gpu_check.log.
#
#     bash scripts/gpu_check.sh            # from the repository root (or anywhere: it cds there)
#     PYTHON=/path/to/python bash scripts/gpu_check.sh
#
# Uses its own synthetic data folder (outputs/gpu_smoke_data) so it never regenerates data/synthetic/ with other
# sizes. Benchmark results are appended to outputs/benchmarks.jsonl as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p outputs
exec > >(tee outputs/gpu_check.log) 2>&1

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
step() { echo; echo "=== $* ($(date -u +%H:%M:%S) UTC, ${SECONDS}s elapsed)"; }

step "environment"
nvidia-smi
"$PYTHON" - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
      f"CUDA available {torch.cuda.is_available()}, devices {torch.cuda.device_count()}")
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device visible: this check needs a GPU")
print("device 0:", torch.cuda.get_device_name(0))
try:
    import faiss
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    print(f"faiss {faiss.__version__}, GPUs seen by faiss: {gpus}")
except ImportError:
    print("faiss not importable")
EOF

step "training throughput: ResNet-50, 256x128, batch 64, AMP, 30 iterations"
timeout 180 "$PYTHON" scripts/benchmark.py train --arch resnet50 --height 256 --width 128 --batch-size 64 \
  --iters 30 --workers 8

step "2-stage smoke run on synthetic data (CUDA, AMP)"
rm -rf outputs/gpu_smoke
timeout 240 "$PYTHON" scripts/train.py --config configs/demo.yaml --out outputs/gpu_smoke --quiet \
  --set device=cuda --set amp=true \
  --set data.source_root=outputs/gpu_smoke_data/synth-a --set data.target_root=outputs/gpu_smoke_data/synth-b \
  --set data.synthetic_train_ids=64 --set data.synthetic_test_ids=32 --set data.synthetic_images_per_id=8 \
  --set data.workers=4 \
  --set pretrain.epochs=2 --set pretrain.warmup_epochs=1 --set pretrain.milestones=[1] \
  --set pretrain.iters_per_epoch=20 \
  --set adapt.rounds=2 --set adapt.epochs_per_round=1 --set adapt.iters_per_epoch=20
test -f outputs/gpu_smoke/checkpoints/final.pt
test -f outputs/gpu_smoke/summary.json
"$PYTHON" -c "import json; print('smoke summary:', json.load(open('outputs/gpu_smoke/summary.json')))"

step "clustering benchmark: Jaccard + eps + DBSCAN at N = 16,522 x 2048"
timeout 180 "$PYTHON" scripts/benchmark.py cluster

step "done: outputs/gpu_check.log"

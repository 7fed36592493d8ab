#!/usr/bin/env bash
# The GPU checks of issues 3 and 4 in one call on a CUDA machine (about 6 minutes on an H200):
#   1. benchmarks/meanflow_unet_step.py: MeanFlow's training step / a flow-matching step on the CIFAR-sized
#      U-Net of flowzoo.core.nets (FlowMapUNet.cifar10);
#   2. FM-10 and MP1 policies trained on point-cloud demonstrations on the GPU (reach-v3 with the goal in
#      agent_pos, button-press-v3; 3 seeds; the Meta-World benchmark's cached demonstrations and network, with
#      3000 updates at batch 128 instead of its 1200 at batch 32 on the CPU). The machine needs no simulator:
#      the trained policies come back as tar files and are evaluated in simulation where Meta-World runs, with
#      python -m benchmarks.robotics_gpu_eval;
#   3. python -m benchmarks.robotics_latency --device cuda: FM-10 vs MP1 ms per action at three network sizes
#      (MP1's paper size among them, to set beside the paper's 6.8 ms).
# Usage (repository root; OUT is where results go; needs the cached demonstrations from
# `python -m benchmarks.robotics_metaworld` in benchmarks/.cache/robotics, and torchcfm + POT wheels in .whl
# for the torchcfm calibration row; without them that row is skipped):
#   OUT=/tmp/gpu bash benchmarks/gpu_checks.sh
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/runs/gpu_checks}"
STEPS="${GPU_TRAIN_STEPS:-3000}"
DEVICE="${GPU_DEVICE:-cuda}"         # cpu: a rehearsal of the script, with e.g. UNET_ARGS="--size tiny --steps 2"
CACHE="${GPU_DEMOS:-benchmarks/.cache/robotics}"
DEADLINE_S="${GPU_DEADLINE_S:-400}"  # the training waves end by then (seconds since the start)
mkdir -p "$OUT"
cd "$ROOT"

# flowzoo from this checkout without installing it (the machine's own torch stays); the benchmarks package
# imports from the repository root, the working directory of every `python3 -m benchmarks.X` below.
SHIM="$(mktemp -d)"
mkdir -p "$SHIM/flowzoo"
for package in core vision three_d robotics biology driving; do ln -s "$ROOT/$package" "$SHIM/flowzoo/$package"; done
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SHIM/site" .whl/*.whl
fi
export PYTHONPATH="$SHIM:$SHIM/site:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv \
    | tee "$OUT/gpu.txt"
fi
python3 -c "import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())" \
  | tee -a "$OUT/gpu.txt"

echo "== 1. MeanFlow step vs FM step, CIFAR U-Net"
timeout 240 python3 -m benchmarks.meanflow_unet_step --device "$DEVICE" ${UNET_ARGS:-} \
  --json "$OUT/unet_step.json" 2>&1 | tee "$OUT/unet_step.txt"

echo "== 2. point-cloud policies trained on the $DEVICE ($STEPS updates)"
TRAIN="${GPU_TRAIN_DIR:-/tmp/gpu_runs}"   # outside OUT: OUT returns at most 8 files
mkdir -p "$TRAIN"
# U-Net (32, 64), not the CPU table's (128, 256) cloud network: a (128, 256) policy is 19 MB of weights, and the
# device machine returns at most 16 MiB per file and 64 MiB in all, while these tars hold 6 policies each. The
# latency step below times the (128, 256) network too (size "benchmark-cloud").
train_wave() {  # train_wave TIMEOUT_S SEED...: FM-10 and MP1 on both tasks for each seed, side by side
  local limit="$1"; shift
  for seed in "$@"; do
    for task in reach-v3 button-press-v3; do
      demos="$CACHE/${task}_pointcloud_10ep_128pts_seed$seed"
      [ "$task" = reach-v3 ] && demos="$CACHE/${task}_pointcloud-goalvisible_10ep_128pts_seed$seed"
      for method in fm mp1; do
        run="${task}_${method}_seed$seed"
        OMP_NUM_THREADS=1 timeout "$limit" python3 -m flowzoo.robotics.train "$method" --task "$task" \
          --obs pointcloud --demos "$demos" --eval_episodes 0 --progress false --policy.down_dims 32 64 \
          --trainer.steps "$STEPS" --trainer.batch_size 128 --trainer.lr 1e-3 --trainer.warmup_steps 100 \
          --trainer.ema_decay 0.99 --trainer.seed "$seed" --trainer.device "$DEVICE" \
          --trainer.checkpoint_every "$STEPS" --trainer.out_dir "$TRAIN/$run" >"$TRAIN/$run.log" 2>&1 &
      done
    done
  done
  wait
}
# Seed 0 first; seeds 1 and 2 only if the call's time (DEADLINE_S from the start) leaves room for them.
train_wave $(( DEADLINE_S - SECONDS - 20 )) 0
left=$(( DEADLINE_S - SECONDS - 20 ))
echo "seed 0 done at ${SECONDS}s; ${left}s left"
if [ "$left" -ge "${GPU_WAVE_MIN_S:-120}" ]; then train_wave "$left" 1 2; fi
python3 - "$TRAIN" "$OUT/summaries.json" <<'EOF'
import json, pathlib, sys
rows = {}
for summary in sorted(pathlib.Path(sys.argv[1]).glob("*/summary.json")):
    data = json.loads(summary.read_text())
    rows[summary.parent.name] = {k: data[k] for k in ("task", "method", "nfe", "steps", "train_seconds",
                                                       "train_ms_per_step")}
pathlib.Path(sys.argv[2]).write_text(json.dumps(rows, indent=2))
print(f"{len(rows)} runs finished;", ", ".join(f"{k} {v['train_ms_per_step']:.1f} ms/step"
                                                    for k, v in rows.items()))
EOF
(cd "$TRAIN" && tar cf "$OUT/policies_fm.tar" *_fm_*/policy *_fm_*/summary.json
 tar cf "$OUT/policies_mp1.tar" *_mp1_*/policy *_mp1_*/summary.json
 tar cf "$OUT/train_logs.tar" *.log)
echo "== 3. policy latency on the GPU"
timeout "${LATENCY_TIMEOUT_S:-180}" python3 -m benchmarks.robotics_latency --device "$DEVICE" --no-progress \
  ${LATENCY_ARGS:-} 2>&1 \
  | tee "$OUT/latency.txt"


ls -la "$OUT"

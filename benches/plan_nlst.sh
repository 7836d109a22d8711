#!/usr/bin/env bash
# The NLST-scale plan (not a timed test): a metadata-only cohort of 90,000 CT/MR series (`catalog
# synth`, ~18 M slices, tables only), its labels, the LDCT splits, then `medtrain plan` of both LDCT
# configs for 1…512 V100s. Every input that is not measured here is given below with its source.
# Usage: benches/plan_nlst.sh WORK_DIR [SERIES] [MEAN_SLICES]   (defaults: 90000 x 200)
# Needs a release build (cargo build --release; MEDTRAIN_BIN names another binary).
set -euo pipefail
work=${1:?work directory}
series=${2:-90000}
slices=${3:-200}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${MEDTRAIN_BIN:-$root/target/release/medtrain}")
mkdir -p "$work" && cd "$work"
if [ ! -f cat/catalog.json ]; then
  [ -f pack/index.json ] || "$bin" catalog synth --out pack --key site.key --series "$series" --slices "$slices"
  rm -rf cat
  "$bin" catalog build pack --out cat
  "$bin" catalog labels import pack/slices_by_instance.csv --out cat --name nodule_slices --key site.key
  # ldct-death-risk.toml reads outcome.followupdays and outcome.deathevent.
  sed '1s/,Death,/,DeathEvent,/' pack/patients.csv > patients.csv
  "$bin" catalog labels import patients.csv --out cat --name outcome --key site.key
fi
# The splits each config's header gives.
[ -f nodule.h5 ] || "$bin" catalog split cat "modality = 'CT' and slice_thickness <= 2.5" --out nodule.h5 \
  --ratios train=0.7,val=0.15,test=0.15 --seed 1
[ -f risk.h5 ] || "$bin" catalog split cat "modality = 'CT'" --level series --out risk.h5 \
  --ratios train=0.7,val=0.15,test=0.15 --seed 1
# The V100 cluster, one assumption per flag:
# --device-tflops 8.76: NVIDIA's ResNet-50 v1.5 PyTorch FP32 training on one V100 32GB, 356 img/s
#   (DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5, pytorch-21.03 container),
#   × 24.6 GFLOP per image (3 × 8.2 GFLOP forward at 224²) = 8.76 TFLOP/s sustained. 3D convolutions
#   are assumed to reach the same rate; not measured.
# --gpus-per-node 4, --intra nvlink2, --inter edr: a 4-GPU V100 SXM2 node with one EDR port.
# --nvme 1.6TB per node; Lustre at 2,000 MB/s per node and 50,000 MB/s in all (assumed, not measured).
# --overlap 0.5: half the allreduce hidden behind backward (assumed; `bench comm` measures it on a
#   real cluster).
for name in ldct-nodule:nodule.h5 ldct-death-risk:risk.h5; do
  config=${name%%:*}
  manifest=${name#*:}
  "$bin" plan cat "$manifest" --config "$root/configs/$config.toml" --device-tflops 8.76 \
    --gpus-per-node 4 --intra nvlink2 --inter edr --nvme 1.6TB --read-node-mbps 2000 \
    --read-total-mbps 50000 --overlap 0.5 --max-ranks 512 --out "plan-$config"
done

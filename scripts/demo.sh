#!/usr/bin/env bash
# One demo per task of the mission, end to end on a phantom cohort, ending with the model's metric
# beside trivial baselines.
#   achilles   tendon ultrasound + sagittal MR → healing grade (regression) with hand-crafted
#              features fused late: phantom → pack → catalog (+ healing and feature labels) → split
#              → train (2 MPI ranks) → eval on the test split (MAE and Spearman beside the training
#              mean and a linear model of the features alone) → Grad-CAM overlays.
#   cxr-risk   chest radiographs (CR and DX) → death risk (Cox): the lung phantom's cohort, its
#              follow-up imported as labels → split of the radiographs → train (2 ranks) → eval on
#              the test split (C-index and AUC of death within 5 years, 95% CIs, beside the image's
#              dense fraction as a trivial baseline) → Grad-CAM overlays.
#   ldct-risk  low-dose chest CT → death risk (Cox) from whole volumes in 3D: the same cohort, a
#              series-level split of the CT → train → eval (C-index beside the brightest lung
#              voxel) → Grad-CAM overlays.
#   ldct-seg   low-dose chest CT → nodule masks: the lung cohort's LIDC-style reader XML imported
#              as masks (consensus of at least 2 readers) → series-level split → a 3D U-Net trained
#              on patches (2 ranks) → sliding-window prediction on the test split, Dice and HD95 per
#              case with 95% CIs beside an HU threshold inside the lungs.
# The LDCT nodule job is the quick start (scripts/quickstart.sh).
# Usage: scripts/demo.sh TASK [OUT_DIR]   (default OUT_DIR: ./demo-TASK)
# MEDTRAIN_BIN=/path/to/medtrain skips the release build; MEDTRAIN_RANKS sets the number of ranks;
# MEDTRAIN_PATIENTS the cohort size (default 120 for achilles, 200 for cxr-risk, 300 for ldct-risk); MEDTRAIN_DEVICE auto, cpu or cuda.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
task="${1:-}"
case "$task" in
  achilles|cxr-risk|ldct-risk|ldct-seg) ;;
  *)
    echo "usage: scripts/demo.sh achilles|cxr-risk|ldct-risk|ldct-seg [OUT_DIR]" >&2
    exit 2 ;;
esac
out="$(realpath -m "${2:-$root/demo-$task}")"
cd "$root"
. scripts/lib.sh
demo_binary
ranks="${MEDTRAIN_RANKS:-2}"
device="${MEDTRAIN_DEVICE:-auto}"
case "$task" in
  achilles) default_patients=120 ;;
  cxr-risk) default_patients=200 ;;
  ldct-risk) default_patients=300 ;;
  ldct-seg) default_patients=120 ;;
esac
patients="${MEDTRAIN_PATIENTS:-$default_patients}"
demo_launcher "$ranks"
start=$SECONDS
mkdir -p "$out"
rm -rf "$out/phantom" "$out/pack" "$out/catalog" "$out/run" "$out/eval" "$out/explain"
set -x
case "$task" in
  achilles)
    "$bin" phantom --cohort achilles --patients "$patients" --out "$out/phantom"
    "$bin" pack "$out/phantom/dicom" --out "$out/pack" --key "$out/site.key" --create-key
    "$bin" catalog build "$out/pack" --out "$out/catalog"
    "$bin" catalog labels import "$out/phantom/truth/healing.csv" --out "$out/catalog" --name healing \
      --key "$out/site.key"
    "$bin" catalog labels import "$out/phantom/truth/features.csv" --out "$out/catalog" --name features \
      --key "$out/site.key"
    "$bin" catalog query "$out/catalog" "modality = 'US' or modality = 'MR'" --group-by modality
    "$bin" catalog split "$out/catalog" "modality = 'US' or modality = 'MR'" --out "$out/manifest.h5" \
      --ratios train=0.6,val=0.2,test=0.2 --seed 2026
    config=configs/achilles-demo.toml ;;
  cxr-risk|ldct-risk)
    "$bin" phantom --patients "$patients" --out "$out/phantom"
    "$bin" pack "$out/phantom/dicom" --out "$out/pack" --key "$out/site.key" --create-key
    "$bin" catalog build "$out/pack" --out "$out/catalog"
    "$bin" catalog labels import "$out/phantom/truth/patients.csv" --out "$out/catalog" --name outcome \
      --key "$out/site.key"
    if [ "$task" = cxr-risk ]; then
      filter="modality = 'CR' or modality = 'DX'"
      level=slice
    else
      filter="modality = 'CT'"
      level=series
    fi
    "$bin" catalog query "$out/catalog" "$filter" --group-by modality
    # A large test split: the C-index interval narrows with the number of patients.
    "$bin" catalog split "$out/catalog" "$filter" --level "$level" --out "$out/manifest.h5" \
      --ratios train=0.55,val=0.1,test=0.35 --seed 2026 --stratify outcome.deathevent
    config="configs/$task-demo.toml" ;;
  ldct-seg)
    "$bin" phantom --patients "$patients" --size 96 --slices 24 --no-radiographs --out "$out/phantom"
    "$bin" pack "$out/phantom/dicom" --out "$out/pack" --key "$out/site.key" --create-key
    "$bin" catalog build "$out/pack" --out "$out/catalog"
    "$bin" catalog labels masks "$out/phantom/truth/lidc" --format lidc --agreement 2 --out "$out/catalog" \
      --name lidc --key "$out/site.key"
    "$bin" catalog query "$out/catalog" "lidc.voxels > 0" --level series
    "$bin" catalog split "$out/catalog" "modality = 'CT'" --level series --out "$out/manifest.h5" \
      --ratios train=0.6,val=0.1,test=0.3 --seed 2026
    config=configs/ldct-seg-demo.toml ;;
esac
"${launch[@]}" "$bin" train "$out/catalog" "$out/manifest.h5" --out "$out/run" \
  --config "$config" --device "$device"
"$bin" eval "$out/run" --split test --out "$out/eval" --device "$device"
if [ "$task" != ldct-seg ]; then
  "$bin" explain "$out/run" test --out "$out/explain" --device "$device"
fi
set +x
echo
echo "== test split: $out/eval/eval.md"
cat "$out/eval/eval.md"
if [ "$task" = ldct-seg ]; then
  echo "== per case: $out/eval/cases.csv"
else
  echo "== explanations: $out/explain/report.md"
fi
echo "== done in $((SECONDS - start)) s"

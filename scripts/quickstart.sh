#!/usr/bin/env bash
# The main job end to end on the embedded default: a generated phantom cohort written as real
# DICOM → pack into de-identified HDF5 shards → a verified summary of the pack → catalog with the
# phantom's labels → cohort queries → a patient-level, stratified train/val/test manifest → training
# on 2 MPI ranks (a single process when mpirun is missing) → evaluation on the held-out test split →
# Grad-CAM overlays and explanation quality against the phantom's lesions (method and layer chosen on
# val among Grad-CAM, Grad-CAM++ and LayerCAM at the stem and every residual block output).
# Usage: scripts/quickstart.sh [OUT_DIR]   (default: ./demo)
# MEDTRAIN_BIN=/path/to/medtrain skips the release build; MEDTRAIN_RANKS sets the number of ranks;
# MEDTRAIN_DEVICE (auto, cpu or cuda; default auto) the device of train, eval and explain;
# MEDTRAIN_CONFIG another settings file (default configs/smoke.toml).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(realpath -m "${1:-$root/demo}")"
cd "$root"
. scripts/lib.sh
demo_binary
ranks="${MEDTRAIN_RANKS:-2}"
device="${MEDTRAIN_DEVICE:-auto}"
config="${MEDTRAIN_CONFIG:-configs/smoke.toml}"
demo_launcher "$ranks"
start=$SECONDS
mkdir -p "$out"
set -x
"$bin" phantom --out "$out/phantom" --config "$config"
"$bin" pack "$out/phantom/dicom" --out "$out/pack" --key "$out/site.key" --create-key --config "$config"
"$bin" inspect "$out/pack" --verify
"$bin" catalog build "$out/pack" --out "$out/catalog"
"$bin" catalog labels import "$out/phantom/truth/slices_by_instance.csv" --out "$out/catalog" \
  --name nodule_slices --key "$out/site.key"
"$bin" catalog labels import "$out/phantom/truth/series.csv" --out "$out/catalog" \
  --name series_labels --key "$out/site.key" --ignore Modality --ignore StudyInstanceUID
"$bin" catalog labels import "$out/phantom/truth/patients.csv" --out "$out/catalog" \
  --name outcome --key "$out/site.key" --event-within death_5y=DeathEvent,FollowUpDays,1826
"$bin" catalog query "$out/catalog" "modality = 'CT' and slice_thickness <= 2.5 and nodule_slices.nodule"
"$bin" catalog query "$out/catalog" "modality = 'CT'" --level patients --group-by outcome.death_5y
"$bin" catalog split "$out/catalog" "modality = 'CT'" --out "$out/manifest.h5" \
  --ratios train=0.6,val=0.25,test=0.15 --stratify series_labels.nodule --seed 2026
rm -rf "$out/run" "$out/eval" "$out/explain"
"${launch[@]}" "$bin" train "$out/catalog" "$out/manifest.h5" --out "$out/run" --config "$config" \
  --device "$device"
"$bin" eval "$out/run" --split test --out "$out/eval" --device "$device"
"$bin" explain "$out/run" test --out "$out/explain" --evaluate --device "$device" \
  --truth "$out/phantom/truth/lesions.csv" --key "$out/site.key" \
  --layer blocks --method gradcam,gradcam++,layercam
set +x
echo
echo "== report: $out/run/report.md (curves: $out/run/loss.png, $out/run/validation.png)"
cat "$out/run/report.md"
echo "== test split: $out/eval/eval.md"
cat "$out/eval/eval.md"
echo "== explanations: $out/explain/report.md (quality per layer: $out/explain/quality.md)"
cat "$out/explain/quality.md"
echo "== done in $((SECONDS - start)) s"

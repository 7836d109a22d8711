#!/usr/bin/env bash
# The main job end to end on the embedded default: a generated phantom cohort written as real
# DICOM → pack into de-identified HDF5 shards → a verified summary of the pack → catalog with the
# phantom's labels → cohort queries → a patient-level, stratified train/val/test manifest.
# Usage: scripts/quickstart.sh [OUT_DIR]   (default: ./demo)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(realpath -m "${1:-$root/demo}")"
cd "$root"
bash scripts/install-deps.sh
. scripts/lib.sh
ensure_cargo
cargo build --release --locked --quiet
bin="$root/target/release/medtrain"
mkdir -p "$out"
set -x
"$bin" phantom --out "$out/phantom" --config configs/smoke.toml
"$bin" pack "$out/phantom/dicom" --out "$out/pack" --key "$out/site.key" --create-key --config configs/smoke.toml
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
  --stratify series_labels.nodule --seed 2026

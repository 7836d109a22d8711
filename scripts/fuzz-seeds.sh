#!/usr/bin/env bash
# Writes the seed corpora of the fuzz targets into OUT/<target>/: the committed text seeds of
# fuzz/seeds/, binary seeds from real product output (a small phantom packed, catalogued and split),
# the pydicom test files when fetched, and the checkpoint fixtures.
# The site key is fixed (the bytes below), so the binary seeds are the same on every machine and the
# CI fuzz gate is a function of the commit; MEDTRAIN_FUZZ_FRESH_KEY=1 (the campaign) creates a new
# random key instead, to explore other pseudonyms.
# Usage: scripts/fuzz-seeds.sh OUT
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
. scripts/lib.sh
ensure_cargo
corpus="${1:?usage: scripts/fuzz-seeds.sh OUT}"
mkdir -p "$corpus"
corpus="$(cd "$corpus" && pwd)"
for t in dicom_decode hdf5_shard pack_index manifest catalog_query label_csv config_toml checkpoint_load nifti_label_map; do
  mkdir -p "$corpus/$t"
  if [ -d "fuzz/seeds/$t" ]; then cp -f fuzz/seeds/"$t"/* "$corpus/$t/" 2>/dev/null || true; fi
done
# Any recent medtrain will do (seeds only need valid files); build one when there is none.
bin="${MEDTRAIN_BIN:-$root/target/debug/medtrain}"
[ -x "$bin" ] || cargo build -j"${CARGO_BUILD_JOBS:-1}" --locked --quiet
bin="$(realpath "$bin")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$bin" --quiet phantom --out "$work/phantom" --patients 2 --size 16 --slices 4 >/dev/null
if [ "${MEDTRAIN_FUZZ_FRESH_KEY:-0}" = "1" ]; then
  "$bin" --quiet pack "$work/phantom/dicom" --out "$work/pack" --key "$work/site.key" --create-key >/dev/null
else
  (umask 077 && printf '%s\n' 6d6564747261696e2066757a7a2073656564206b657920286669786564292121 >"$work/site.key")
  "$bin" --quiet pack "$work/phantom/dicom" --out "$work/pack" --key "$work/site.key" >/dev/null
fi
# Relative paths: the manifest records the catalog's path as given, and the seeds must not depend on
# where this runs.
(cd "$work" && "$bin" --quiet catalog build pack --out catalog >/dev/null)
(cd "$work" && "$bin" --quiet catalog split catalog "modality = 'CT'" --out manifest.h5 \
  --ratios train=0.5,val=0.5 --seed 1 >/dev/null)
# A few phantom DICOM files of each modality (small ones first).
find "$work/phantom/dicom" -type f -size -40k | sort | head -n 12 | while read -r f; do
  cp "$f" "$corpus/dicom_decode/phantom-$(basename "$(dirname "$f")")-$(basename "$f")"
done
# Every transfer syntax pydicom ships a test file for (decode conformance data), when fetched.
data="${MEDTRAIN_PYDICOM_DATA:-$root/target/test-data/pydicom/data/test_files}"
if [ -d "$data" ]; then
  find "$data" -maxdepth 1 -name '*.dcm' -size -64k | sort | head -n 60 | while read -r f; do
    cp "$f" "$corpus/dicom_decode/"
  done
fi
cp "$work"/pack/shard-*.h5 "$corpus/hdf5_shard/"
cp "$work/pack/index.json" "$corpus/pack_index/index.json"
# The manifest target reads [n][n bytes of checksum file][manifest bytes] (fuzz/fuzz_targets/manifest.rs).
sidecar="$work/manifest.h5.blake3"
{ printf "\\$(printf '%03o' "$(wc -c <"$sidecar")")"; cat "$sidecar" "$work/manifest.h5"; } >"$corpus/manifest/manifest.bin"
cp tests/reference/fixtures/torch_ckpt_stem3.safetensors tests/reference/fixtures/*_io.safetensors \
  "$corpus/checkpoint_load/"
cp configs/*.toml "$corpus/config_toml/"
find "$work/phantom/truth" -name '*.csv' -size -64k -exec cp {} "$corpus/label_csv/" \;
# The phantom's lesion masks, as written (gzip) and inflated (what nifti::parse reads).
for f in "$work"/phantom/truth/masks/*.nii.gz; do
  gzip -dc "$f" >"$corpus/nifti_label_map/$(basename "${f%.gz}")"
done
echo "seed corpora in $corpus" >&2

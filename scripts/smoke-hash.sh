#!/usr/bin/env bash
# The reference 2-rank smoke run: a seeded phantom (configs/smoke.toml, 8 patients, no radiographs)
# packed with a fixed site key, catalogued, labelled, split, and trained with `mpirun -np 2` on
# configs/smoke.toml. Prints the BLAKE3 of the final checkpoint's model.safetensors and
# optimizer.safetensors (byte-reproducible files), so that a change meant to keep behaviour (a
# refactoring) can show bitwise-equal weights.
# Usage: scripts/smoke-hash.sh   (MEDTRAIN_BIN: the binary, else target/debug/medtrain)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$(realpath "${MEDTRAIN_BIN:-$root/target/debug/medtrain}")"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
m() { "$bin" --quiet "$@"; }
(umask 077 && printf '%s\n' 736d6f6b652072756e207265666572656e6365206b65792c2066697865642121 >site.key)
m phantom --out phantom --config "$root/configs/smoke.toml" --patients 8 --no-radiographs >/dev/null
m pack phantom/dicom --out pack --key site.key >/dev/null
m catalog build pack --out catalog >/dev/null
m catalog labels import phantom/truth/slices_by_instance.csv --out catalog --name nodule_slices --key site.key >/dev/null
m catalog split catalog "modality = 'CT'" --out manifest.h5 --ratios train=0.6,val=0.2,test=0.2 --seed 7 >/dev/null
mpirun --allow-run-as-root --oversubscribe -np 2 "$bin" --quiet train catalog manifest.h5 --out run \
  --config "$root/configs/smoke.toml" >/dev/null
last="$(ls -d run/checkpoints/step-* | sort | tail -n 1)"
echo "final checkpoint: $(basename "$last")"
for f in model.safetensors optimizer.safetensors; do
  echo "$f: $(python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$last/$f") (sha256)"
done

#!/usr/bin/env bash
# `pack --from` benchmark, one run: the phantom CT cohort packed from a local Orthanc (DICOMweb
# plugin) vs packed from the same files on disk vs a Python DICOMweb client (dicomweb-client +
# pydicom + h5py, benches/pacs_dicomweb_client.py) doing the same work. Orthanc runs in its own
# network namespace with only loopback (needs root for `unshare -n`); the clients run in it too.
# The Python packages go into a bench venv (target/bench-pacs-venv), not into CI.
# Usage: benches/pacs.sh [WORK_DIR]   Prints a Markdown table for BENCHMARKS.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(realpath -m "${1:-$root/target/bench-pacs}")"
venv="$root/target/bench-pacs-venv"
plugin="$(dpkg -L orthanc-dicomweb | grep '\.so$' | head -1)"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q dicomweb-client pydicom h5py numpy
cargo build --release --locked --quiet --manifest-path "$root/Cargo.toml"
bin="$root/target/release/medtrain"
threads="${RAYON_NUM_THREADS:-2}"
export RAYON_NUM_THREADS="$threads"
concurrency=4
rm -rf "$work"; mkdir -p "$work"
printf '[phantom]\nradiographs = false\n' > "$work/phantom.toml"
"$bin" -q phantom --out "$work/cohort" --config "$work/phantom.toml" >/dev/null
dicom="$work/cohort/dicom"

export MEDTRAIN_DICOMWEB_USER=bench MEDTRAIN_DICOMWEB_PASSWORD=bench-pw
cat > "$work/orthanc.json" <<JSON
{ "Name": "bench", "StorageDirectory": "$work/orthanc-db", "IndexDirectory": "$work/orthanc-db",
  "HttpPort": 8042, "DicomServerEnabled": false, "RemoteAccessAllowed": false,
  "AuthenticationEnabled": true, "RegisteredUsers": { "bench": "bench-pw" },
  "Plugins": [ "$plugin" ], "DicomWeb": { "Enable": true, "Root": "/dicom-web/" } }
JSON
unshare -n sleep 7200 & ns=$!
orthanc=
trap 'kill $orthanc $ns 2>/dev/null || true' EXIT
sleep 0.2
inns() { nsenter -t "$ns" -n "$@"; }
inns ip link set lo up
# nsenter runs Orthanc in its own process, so $! is the server (a shell function would be a subshell).
nsenter -t "$ns" -n Orthanc "$work/orthanc.json" > "$work/orthanc.log" 2>&1 & orthanc=$!
url=http://127.0.0.1:8042
until inns curl -sf -u bench:bench-pw "$url/system" >/dev/null; do sleep 0.2; done
(cd "$dicom" && python3 -m zipfile -c "$work/cohort.zip" .)
inns curl -sf -u bench:bench-pw -X POST --data-binary @"$work/cohort.zip" "$url/instances" >/dev/null

now() { date +%s.%N; }
find "$dicom" -type f -exec cat {} + > /dev/null
t0=$(now); m=$("$bin" -q pack "$dicom" --out "$work/disk" --key "$work/site.key" --create-key --json); t1=$(now)
echo "from disk $m" | tr -d '\n' > "$work/raw-disk.json"; echo "$t1 - $t0" | bc > "$work/t-disk"
t0=$(now); m=$(inns "$bin" -q pack --from "$url/dicom-web" --out "$work/pulled" --key "$work/site.key" \
  --concurrency "$concurrency" --json); t1=$(now)
echo "$m" > "$work/raw-pull.json"; echo "$t1 - $t0" | bc > "$work/t-pull"
t0=$(now); p=$(inns "$venv/bin/python" "$root/benches/pacs_dicomweb_client.py" "$url/dicom-web" \
  "$work/py.h5" --concurrency "$concurrency"); t1=$(now)
echo "$p" > "$work/raw-py.json"; echo "$t1 - $t0" | bc > "$work/t-py"
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
t = lambda n: float(open(f"{w}/t-{n}").read())
disk = json.loads(open(f"{w}/raw-disk.json").read().split(" ", 2)[2])
pull = json.load(open(f"{w}/raw-pull.json"))
py = json.load(open(f"{w}/raw-py.json"))
rows = [
    ("medtrain pack (files on disk)", disk["items_packed"], disk["pixel_bytes_written"], t("disk")),
    ("medtrain pack --from (DICOMweb)", pull["pack"]["items_packed"], pull["pack"]["pixel_bytes_written"], t("pull")),
    ("dicomweb-client + pydicom + h5py", py["series"], py["bytes"], t("py")),
]
print(f"fetched {pull['bytes_fetched']/1e6:.0f} MB of multipart bodies ({pull['instances_fetched']} objects)")
print("| tool | series | MB (HU int16) | seconds | series/s | MB/s |")
print("|---|---|---|---|---|---|")
for name, series, nbytes, sec in rows:
    print(f"| {name} | {series} | {nbytes/1e6:.0f} | {sec:.2f} | {series/sec:.1f} | {nbytes/1e6/sec:.0f} |")
PY

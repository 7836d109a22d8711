# Shared by the scripts: puts cargo on PATH or says what to install.
ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || {
    echo "cargo not found: install Rust 1.85 or newer (https://rustup.rs) and re-run" >&2
    exit 1
  }
}

# The demos' binary: $MEDTRAIN_BIN, or a release build (installing the OS packages first). Sets `bin`.
demo_binary() {
  if [ -n "${MEDTRAIN_BIN:-}" ]; then
    bin="$MEDTRAIN_BIN"
  else
    bash scripts/install-deps.sh
    ensure_cargo
    cargo build --release --locked --quiet
    bin="$(pwd)/target/release/medtrain"
  fi
}

# The launcher of a demo's training on RANKS ranks: `mpirun` (one thread per rank, oversubscribed so
# a small machine runs more ranks than it has cores), or nothing (one process) when mpirun is
# missing or RANKS is 1. Sets the array `launch`.
demo_launcher() {
  launch=()
  if command -v mpirun >/dev/null && [ "$1" -gt 1 ]; then
    launch=(mpirun -np "$1" --oversubscribe --bind-to none)
    if [ "$(id -u)" = 0 ]; then launch+=(--allow-run-as-root); fi
  fi
}

# Drops this crate's own build outputs (test binaries, rlibs, fingerprints, incremental caches) from
# target/ and fuzz/target/, keeping the dependencies' builds: every commit rebuilds the crate anyway,
# and a kept target/ would otherwise grow by about 1 GB per commit built.
prune_own_builds() {
  local d f names=(medtrain libmedtrain integration medtrain_fuzz libmedtrain_fuzz medtrain-fuzz)
  for f in fuzz/fuzz_targets/*.rs; do names+=("$(basename "$f" .rs)"); done
  for d in target/debug target/release fuzz/target/*/release; do
    [ -d "$d" ] || continue
    rm -rf "$d/incremental"
    for f in "${names[@]}"; do
      rm -rf "$d"/deps/"$f"-* "$d"/.fingerprint/"$f"-* "$d"/build/"$f"-*
    done
  done
}

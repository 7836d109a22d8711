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

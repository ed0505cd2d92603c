# Shared by benches/load.sh and benches/memory.sh (sourced, from the repository root).

OHA_VERSION=1.16.0
BODY=tests/fixtures/admission/create-deployment-pod.json

# The load generator: $OHA, oha on the PATH, or installed from crates.io into target/bench-tools.
find_oha() {
  local oha=${OHA:-$(command -v oha || true)}
  if [ -z "$oha" ]; then
    oha=target/bench-tools/bin/oha
    if [ ! -x "$oha" ]; then
      echo "installing oha $OHA_VERSION into target/bench-tools ..." >&2
      cargo install oha --locked --version "$OHA_VERSION" --root target/bench-tools >&2
    fi
  fi
  echo "$oha"
}

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Sourced by models/runtime_eval.sh and models/fewstep_eval.sh: strict mode, the repository root
# as the working directory, the runtime binary in $bin (the caller's $1, default
# target/release/dualscale, built if missing) and a temporary directory $out removed on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${1:-target/release/dualscale}
[ -x "$bin" ] || cargo build --release --locked
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

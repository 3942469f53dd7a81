#!/usr/bin/env bash
# cross/ci.sh: the ARM and CUDA part of CI, called by .ci/run after the x86_64 tests.
#
# 1. installs the cross toolchain and qemu (cross/setup.sh; idempotent);
# 2. x86_64: builds with `--features cuda` and runs the device tests, which on this GPU-less
#    machine check that `--device cuda` is a clear error and `auto` falls back to the CPU;
# 3. aarch64 under qemu-user: the whole suite on a Cortex-A72 (Raspberry Pi 4), then the
#    CPU-detection tests on a Cortex-A53 (Pi 3, Zero 2 W: no FP16) and a Cortex-A76 (Pi 5: FP16,
#    so an f16 model is computed in f16);
# 4. armv7 under qemu-user: the whole suite on a Cortex-A7 (NEON, VFPv4: 32-bit Raspberry Pi OS);
# 5. the shipped release binaries for both (cross/build.sh: LTO, glibc <= 2.31 checked), their
#    sizes, and a run of the aarch64 one under qemu;
# 6. the arm64 and armhf .deb packages (cross/package.sh), their control fields and contents.
# Budget: CI has 90 minutes on a 2-core machine for everything; .ci/run with this script took
# 32.6 min in all (cross/README.md). The whole suite runs on one CPU model per target;
# the other models run only the tests whose result depends on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

t0=$(date +%s)
step() { echo "== [cross/ci.sh +$(( $(date +%s) - t0 ))s] $*"; }

step "setup"
bash cross/setup.sh

step "x86_64 --features cuda: build, device tests"
# The library's device tests and the CLI's --device test, in a build with tract's CUDA runtime
# on this GPU-less machine: `cuda` must be a clear error, `auto` must fall back to the CPU.
cargo test --locked --features cuda --lib --test cli -- device

step "aarch64: whole suite on cortex-a72"
cross/test.sh aarch64 cortex-a72
step "aarch64: CPU detection and the fp16 model on cortex-a53 and cortex-a76"
# The tests whose outcome depends on the core: what is detected, and whether --precision auto
# computes the fp16 model in f16 (a76) or upcasts it (a53).
cross/test.sh aarch64 cortex-a53 cortex-a76 -- --lib --test cli -- cpu:: fp16

step "armv7: whole suite on cortex-a7"
cross/test.sh armv7 cortex-a7

step "aarch64: shipped binary"
bin=$(cross/build.sh pi4)
ls -l "$bin"
out=$(mktemp -d)
# The release build (LTO, panic=abort) is not what the suite ran; start it once under qemu.
qemu=(qemu-aarch64-static -cpu cortex-a72 -L /usr/aarch64-linux-gnu)
"${qemu[@]}" "$bin" info --system
"${qemu[@]}" "$bin" generate --steps 4 --out "$out"
ls -l "$out"
rm -rf "$out"

step "armv7: shipped binary"
bin=$(cross/build.sh pi4-armv7)
ls -l "$bin"

step "packages: arm64 and armhf .deb"
# Reuses the two release builds above; installs cargo-deb (pinned) the first time.
cross/package.sh

step "done"

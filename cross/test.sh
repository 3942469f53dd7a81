#!/usr/bin/env bash
# cross/test.sh: runs the test suite for an ARM target under qemu-user, once per emulated CPU model.
#
# Usage: cross/test.sh aarch64|armv7 CPU [CPU...] [-- CARGO TEST ARGS]
#   e.g. cross/test.sh aarch64 cortex-a72 cortex-a76
#        cross/test.sh aarch64 cortex-a53 -- --lib cpu::    (only the CPU-detection tests)
#   CPU models: aarch64: cortex-a53 (Pi 3, Zero 2 W), cortex-a72 (Pi 4), cortex-a76 (Pi 5);
#               armv7:   cortex-a7, cortex-a15 (NEON + VFPv4, as every Pi from the 2 v1.1 on in
#                        32-bit mode), cortex-a8 (NEON, VFPv3 only).
#
# The suite is built once per target with the `qemu` profile (release code generation, so tract
# runs at a usable speed under emulation, plus unwinding, debug assertions and overflow checks in
# our crate, without the release profile's LTO) and linked the way cross/build.sh links the
# shipped binary (cargo-zigbuild, glibc 2.31 symbols), so what is tested is what ships.
# For each CPU model it sets, together:
# - QEMU_CPU: the CPU qemu emulates; its features reach the program through the auxiliary
#   vector (getauxval, std's is_aarch64_feature_detected!), as on a board;
# - DUALSCALE_EXPECT_CPU: what src/cpu.rs's detection test asserts against (features and the
#   precision chosen for an f16 model);
# - tract's CPU knobs: qemu 7.2 shows the x86 host's /proc/cpuinfo, which tract reads to pick its
#   kernels, so without them tract would run its generic aarch64 kernels (no FP16 path, no
#   Cortex-A53/A72 tuned ones) and, on armv7, its non-NEON kernels. The knobs make tract choose
#   what it chooses on the real board.
# Integration tests start the ARM `dualscale` binary through qemu themselves
# (DUALSCALE_TEST_RUNNER); QEMU_LD_PREFIX tells qemu where the target's loader and libraries are.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; /^set -euo/d' >&2; exit 2; }
[ $# -ge 2 ] || usage
case $1 in
    aarch64) target=aarch64-unknown-linux-gnu; sysroot=/usr/aarch64-linux-gnu ;;
    armv7) target=armv7-unknown-linux-gnueabihf; sysroot=/usr/arm-linux-gnueabihf ;;
    *) usage ;;
esac
shift
cpus=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do cpus+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
cargo_args=("$@")
[ ${#cpus[@]} -ge 1 ] || usage

# What tract would read from the board's /proc/cpuinfo, as its knobs (tract_knobs).
source cross/tract-knobs.sh

qemu_arch=${target%%-*}; qemu_arch=${qemu_arch/armv7/arm}
# Integration tests start the dualscale binary through the emulator named here (tests/cli.rs),
# so they need no binfmt_misc registration on the build machine.
export DUALSCALE_TEST_RUNNER="qemu-$qemu_arch-static -L $sysroot"
export QEMU_LD_PREFIX=$sysroot
status=0
for cpu in "${cpus[@]}"; do
    knobs=$(tract_knobs "$cpu")
    echo "== $target on $cpu ($knobs)" >&2
    start=$(date +%s)
    # `.2.31`: same glibc symbol versions as the shipped binary; the runner in .cargo/config.toml
    # starts each test binary under qemu with QEMU_CPU from the environment. (`cargo zigbuild` is
    # only `build`; the test subcommand is reached as `cargo-zigbuild test`.)
    if env QEMU_CPU="$cpu" DUALSCALE_EXPECT_CPU="$cpu" "$knobs" \
        cargo-zigbuild test --profile qemu --locked --target "$target.2.31" "${cargo_args[@]}"; then
        echo "== $target on $cpu: passed in $(( $(date +%s) - start ))s" >&2
    else
        echo "== $target on $cpu: FAILED after $(( $(date +%s) - start ))s" >&2
        status=1
    fi
done
exit $status

#!/usr/bin/env bash
# cross/build.sh: builds the release `dualscale` binary for one board and checks that it starts on
# the oldest OS images we support (glibc <= 2.31). Prints the binary's path on stdout.
#
# Usage: cross/build.sh BOARD [--tuned] [--small] [-- EXTRA CARGO ARGS]
#
#   --small: opt-level "z" instead of the release profile's "s": 2.6 MB smaller for aarch64
#            (10.6 MB instead of 13.2 MB), model evaluations ~20% slower (cross/README.md,
#            "Release profile").
#
#   BOARD          rust target                     --tuned: -C target-cpu / features
#   pi5            aarch64-unknown-linux-gnu       cortex-a76 (has FP16, dot product, crypto)
#   pi4            aarch64-unknown-linux-gnu       cortex-a72 minus aes,sha2 (BCM2711 has no crypto)
#   pi3, zero2     aarch64-unknown-linux-gnu       cortex-a53 minus aes,sha2 (BCM2837/RP3A0: none)
#   pi3-armv7, zero2-armv7, pi4-armv7, pi5-armv7
#                  armv7-unknown-linux-gnueabihf   +neon,+vfp4 (every Pi 2 v1.1 and later has both)
#   jetson-orin    aarch64-unknown-linux-gnu       cortex-a78ae; built with --features cuda
#
# The default is the generic build, one binary per architecture: tract picks its NEON / FP16 /
# dot-product kernels at run time from what the CPU reports, so the generic build already runs
# its matrix products with the best kernels a board has. --tuned only changes how rustc compiles
# our own and tract's Rust code (scheduling, auto-vectorisation); it is optional and the binary
# then runs on that core and newer ones only. LLVM's cortex-a53/-a72 models include the crypto
# extensions, which the Raspberry Pi 3, Zero 2 W and 4 lack, so they are switched off: a binary
# compiled assuming them may die with SIGILL there; the script checks rustc's view of the flags.
#
# glibc floor: Debian 12's cross gcc links against glibc 2.36 and the binary then needs 2.34/2.35
# (measured: __libc_start_main@GLIBC_2.34, hypot@GLIBC_2.35); Raspberry Pi OS Bullseye and JetPack
# 5 have 2.31. Choices measured: cargo-zigbuild targeting `<triple>.2.31` links against zig's
# glibc 2.31 stubs and works for both targets; musl (fully static) works for aarch64 only, since
# rustup has no armv7-unknown-linux-musleabihf std for this toolchain here (404), and musl's
# allocator is slower. So zigbuild for both. cross/check-glibc.sh verifies every binary.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; /^set -euo/d' >&2; exit 2; }
[ $# -ge 1 ] || usage
board=$1; shift
tuned=false
small=false
extra=()
while [ $# -gt 0 ]; do
    case $1 in
        --tuned) tuned=true ;;
        --small) export CARGO_PROFILE_RELEASE_OPT_LEVEL=z; small=true ;;
        --) shift; extra=("$@"); break ;;
        *) usage ;;
    esac
    shift
done

# Per-board target and, for --tuned, the codegen flags. Features listed with "-" are ones LLVM's
# CPU model would otherwise switch on although the board's SoC lacks them.
features=()
case $board in
    pi5) target=aarch64-unknown-linux-gnu; cpu_flags="-C target-cpu=cortex-a76" ;;
    pi4) target=aarch64-unknown-linux-gnu; cpu_flags="-C target-cpu=cortex-a72 -C target-feature=-aes,-sha2" ;;
    pi3|zero2) target=aarch64-unknown-linux-gnu; cpu_flags="-C target-cpu=cortex-a53 -C target-feature=-aes,-sha2" ;;
    pi3-armv7|zero2-armv7|pi4-armv7|pi5-armv7)
        # 32-bit Raspberry Pi OS. The target's baseline is ARMv7 + VFPv3-D16 without NEON, which
        # even a Pi 2 runs; tract finds NEON at run time.
        target=armv7-unknown-linux-gnueabihf; cpu_flags="-C target-feature=+neon,+vfp4" ;;
    jetson-orin)
        # JetPack 6 (CUDA 12.x): the cuda feature loads libcuda at run time and falls back to the
        # CPU without it, so one binary serves Orin with and without a GPU-enabled image.
        target=aarch64-unknown-linux-gnu; cpu_flags="-C target-cpu=cortex-a78ae"; features=(--features cuda) ;;
    *) echo "unknown board '$board'" >&2; usage ;;
esac

# Tuned builds get their own target dir: different RUSTFLAGS would otherwise rebuild the shared
# generic one from scratch on every switch.
target_dir=${CARGO_TARGET_DIR:-target}
# Like --tuned, --small gets its own target dir (another opt-level rebuilds every crate).
$small && target_dir="$target_dir/small"
if $tuned; then
    target_dir="$target_dir/tuned-$board"
    # Target-scoped variable: build scripts and proc macros, which run on this x86 host, must not
    # get ARM codegen flags.
    export "CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_RUSTFLAGS=$cpu_flags"
fi

# `.2.31` asks cargo-zigbuild for the glibc 2.31 symbol versions; cargo itself sees the plain
# triple, so the output lands in $target_dir/$target/release as usual.
start=$(date +%s)
cargo zigbuild --release --locked --target "$target.2.31" --target-dir "$target_dir" \
    --bin dualscale "${features[@]}" "${extra[@]}" >&2
bin="$target_dir/$target/release/dualscale"
echo "cross/build.sh: $board$($tuned && echo ' (tuned)')$($small && echo ' (small)') built in $(( $(date +%s) - start ))s:" \
    "$(stat -c %s "$bin") bytes" >&2

cross/check-glibc.sh "$bin" 2.31 >&2
if $tuned && [[ $cpu_flags == *-aes* ]]; then
    # The board lacks the crypto extensions: rustc must not assume them anywhere (code guarded
    # by a run-time check, like std's, may still contain such instructions, and that is fine).
    # shellcheck disable=SC2086 # cpu_flags is a list of flags
    if rustc --print cfg --target "$target" $cpu_flags | grep -E 'target_feature="(aes|sha2|sha3|sm4)"'; then
        echo "cross/build.sh: the $board flags enable crypto extensions the board lacks" >&2
        exit 1
    fi
fi
echo "$bin"

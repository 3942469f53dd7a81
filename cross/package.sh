#!/usr/bin/env bash
# cross/package.sh: builds the Debian packages for 64-bit (arm64) and 32-bit (armhf) Raspberry Pi
# OS / Ubuntu / JetPack, and checks what is inside them. Writes target/debian/*.deb.
#
# Usage: cross/package.sh [arm64] [armhf]      (both by default)
#
# The binary is the generic build of cross/build.sh (pi4 for arm64, pi4-armv7 for armhf: one
# binary per architecture, tract choosing its kernels at run time), so it carries the glibc 2.31
# floor that the packages' `Depends: libc6 (>= 2.31)` states. cargo-deb, which is installed from
# crates.io when missing, then only packs: `--no-build`, with the assets and control fields of
# [package.metadata.deb] in Cargo.toml (binary, shipped models under /usr/share/dualscale/models).
# Checks: dpkg-deb --info (architecture, dependencies) and --contents (binary and every model).
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: cargo-deb's handling of --target/--no-build and of asset paths has changed across majors.
CARGO_DEB_VERSION=3.8.0

arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(arm64 armhf)

if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    # From crates.io, built here (about 100 crates; no system libraries needed on Debian 12).
    cargo install --locked --version "$CARGO_DEB_VERSION" cargo-deb
fi

for arch in "${arches[@]}"; do
    case $arch in
        arm64) board=pi4; target=aarch64-unknown-linux-gnu ;;
        armhf) board=pi4-armv7; target=armv7-unknown-linux-gnueabihf ;;
        *) echo "cross/package.sh: unknown architecture '$arch' (arm64, armhf)" >&2; exit 2 ;;
    esac
    cross/build.sh "$board" >/dev/null
    # --no-strip: the release profile already strips, and cargo-deb would look for a host strip.
    deb=$(cargo deb --no-build --no-strip --locked --target "$target" --output target/debian/ \
        | tail -n 1)
    echo "== $deb"
    dpkg-deb --info "$deb"
    contents=$(dpkg-deb --contents "$deb")
    echo "$contents"

    # The control fields a board's dpkg/apt will judge the package by.
    [ "$(dpkg-deb --field "$deb" Architecture)" = "$arch" ] \
        || { echo "$deb: Architecture is not $arch" >&2; exit 1; }
    dpkg-deb --field "$deb" Depends | grep -q 'libc6 (>= 2.31)' \
        || { echo "$deb: Depends does not state the glibc 2.31 floor" >&2; exit 1; }
    # Every shipped model file must be in the package, at the path the binary documents.
    expected=(./usr/bin/dualscale)
    for f in models/*.onnx models/*.json models/data/*.npy; do
        expected+=("./usr/share/dualscale/$f")
    done
    # Kiosk mode's systemd units (installed disabled), its service user and its config.
    expected+=(./lib/systemd/system/dualscale-kiosk.service ./lib/systemd/system/dualscale-once.service
               ./lib/systemd/system/dualscale-once.timer ./usr/lib/sysusers.d/dualscale.conf ./etc/dualscale/kiosk.toml)
    for f in "${expected[@]}"; do
        grep -q " $f\$" <<<"$contents" || { echo "$deb: missing $f" >&2; exit 1; }
    done
    # The packed binary is the one checked by build.sh; check it again as packed.
    tmp=$(mktemp -d)
    dpkg-deb --extract "$deb" "$tmp"
    cross/check-glibc.sh "$tmp/usr/bin/dualscale" 2.31
    rm -rf "$tmp"
    echo "== $deb: ok ($(stat -c %s "$deb") bytes, ${#expected[@]} files checked)"
done

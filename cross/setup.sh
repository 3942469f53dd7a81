#!/usr/bin/env bash
# cross/setup.sh: installs what cross-building and qemu-testing for the boards needs, on Debian 12
# (bookworm) x86_64. Idempotent: what is already there is left alone, so CI can call it every run.
#
# Installs:
# - Debian's cross gcc for aarch64 and armhf: the linkers of .cargo/config.toml, and (through
#   their dependencies) each target's glibc, ld.so and libgcc_s, which qemu-user loads with -L.
# - qemu-user-static: runs the aarch64 and armv7 test binaries on this x86 machine (cargo's runner
#   in .cargo/config.toml; tests that start the binary name qemu themselves, so no binfmt_misc
#   registration is needed, which containers often cannot do).
# - file (cross/check-glibc.sh tells static from dynamic with it); objdump comes with binutils.
# - the rustup targets aarch64-unknown-linux-gnu and armv7-unknown-linux-gnueabihf.
# - cargo-zigbuild and zig (ziglang), from PyPI: the shipped binaries link against glibc 2.31
#   symbols through zig's versioned glibc stubs (see cross/build.sh for why).
# Needs root (or sudo) for apt-get, and network access to Debian, static.rust-lang.org and PyPI.
set -euo pipefail

# Pinned so a CI run today and one next month link the same way; bump deliberately.
ZIGLANG_VERSION=0.17.1
CARGO_ZIGBUILD_VERSION=0.24.1

# apt-get needs root; use sudo where we are not root and it exists.
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo

packages=(gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf qemu-user-static binutils file)
missing=()
for p in "${packages[@]}"; do
    # dpkg-query's status is the reliable "installed" test (dpkg -s also matches removed packages).
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: apt-get install ${missing[*]}"
    # update first: a fresh CI image may have empty package lists.
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done

# pip puts console scripts (cargo-zigbuild) in its scripts dir, which must be on PATH for cargo
# to find the subcommand; `python3 -m ziglang` is how cargo-zigbuild finds zig when no `zig` is.
if ! command -v cargo-zigbuild >/dev/null \
    || ! cargo-zigbuild --version | grep -q " $CARGO_ZIGBUILD_VERSION\$" \
    || ! python3 -m ziglang version 2>/dev/null | grep -qx "$ZIGLANG_VERSION"; then
    python3 -m pip install --quiet --disable-pip-version-check \
        "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
    # pyenv installs console scripts behind shims that exist only after a rehash.
    command -v pyenv >/dev/null && pyenv rehash || true
fi
command -v cargo-zigbuild >/dev/null || {
    echo "setup: cargo-zigbuild was installed but is not on PATH ($(python3 -m site --user-base)/bin?)" >&2
    exit 1
}
echo "setup: cross toolchain ready ($(cargo-zigbuild --version), zig $(python3 -m ziglang version))"

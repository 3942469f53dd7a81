#!/usr/bin/env bash
# cross/setup.sh: installs what cross-building and qemu-testing for the boards needs, on Debian 12
# (bookworm) x86_64. Idempotent: what is already there is left alone, so CI can call it every run.
#
# Installs:
# - Debian's cross gcc for aarch64 and armhf: the linkers of .cargo/config.toml, and (through
#   their dependencies) each target's glibc, ld.so and libgcc_s, which qemu-user loads with -L.
# - qemu-user-static: runs the aarch64 and armv7 test binaries on this x86 machine, registered
#   with binfmt_misc so that ARM binaries started by tests run too.
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

# Integration tests start the `dualscale` binary themselves (std::process::Command), outside
# cargo's runner: the kernel must know to hand ARM ELF files to qemu. Debian's qemu-user-static
# ships the binfmt_misc rules (F: qemu is opened now, so it works in any mount namespace), but
# only systemd-binfmt applies them, and containers and CI VMs often run no systemd.
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/register" ]; then
    $SUDO mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null \
        || echo "setup: cannot mount $binfmt: tests that start the binary will fail" >&2
fi
for arch in aarch64 arm; do
    if [ -e "$binfmt/register" ] && [ ! -e "$binfmt/qemu-$arch" ]; then
        $SUDO sh -c "cat /usr/lib/binfmt.d/qemu-$arch.conf > $binfmt/register"
    fi
done

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

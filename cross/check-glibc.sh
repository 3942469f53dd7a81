#!/usr/bin/env bash
# cross/check-glibc.sh: fails unless an ELF binary starts on the oldest images we support.
#
# Usage: cross/check-glibc.sh BINARY [MAX_GLIBC]   (MAX_GLIBC defaults to 2.31)
#
# 2.31 is the glibc of Raspberry Pi OS Bullseye (Debian 11) and of JetPack 5 (Ubuntu 20.04); a
# binary that asks for a newer symbol version fails there at start-up with "version `GLIBC_2.34'
# not found". A fully static binary (musl) has no floor and passes. Used by cross/build.sh and
# cross/ci.sh; also usable on a binary built some other way (cross-rs, cargo-deb).
set -euo pipefail

bin=${1:?usage: cross/check-glibc.sh BINARY [MAX_GLIBC]}
max=${2:-2.31}

# `file` tells a static binary from a dynamic one without running it.
if file -L "$bin" | grep -q 'statically linked'; then
    echo "$bin: statically linked, no glibc floor"
    exit 0
fi
# The dynamic symbol table lists every versioned glibc symbol the loader will demand. binutils'
# plain objdump reads foreign ELF files for the dynamic table, so no cross binutils are needed.
need=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
if [ -z "$need" ]; then
    echo "$bin: dynamically linked but no versioned glibc symbol: not a glibc binary?" >&2
    exit 1
fi
# sort -V orders versions; the floor is fine when the larger of (need, max) is max.
if [ "$(printf '%s\n%s\n' "$need" "$max" | sort -V | tail -n 1)" != "$max" ]; then
    echo "$bin: needs glibc $need, newer than the $max floor; symbols over it:" >&2
    objdump -T "$bin" | sed -n 's/.*(\?GLIBC_\([0-9.]*\))\? \{1,\}\([^ ]*\)$/\1 \2/p' | sort -uV \
        | while read -r ver sym; do
            [ "$(printf '%s\n%s\n' "$ver" "$max" | sort -V | tail -n 1)" = "$max" ] || echo "  $sym@GLIBC_$ver" >&2
        done
    exit 1
fi
echo "$bin: glibc floor $need (<= $max)"

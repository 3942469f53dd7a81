#!/usr/bin/env bash
# cross/insn-count.sh: aarch64 instructions executed per model evaluation, counted under qemu-user,
# for the fp32 / fp16 / int8 files of the dino and landscape models on an emulated Cortex-A72
# (Raspberry Pi 4: NEON only) and Cortex-A76 (Pi 5: native f16 arithmetic and dot product).
# Prints a Markdown table on stdout. Needs no GPU, no board, and is needed by neither the build
# nor the tests.
#
# Why: under emulation time means nothing, but what tract executes on ARM (which kernels, how many
# instructions) is what it executes on a board. Instruction counts are not time: one SDOT does 16
# int8 multiply-adds, one FMLA .4s four f32 ones, one FMLA .8h eight f16 ones, one SMLAL four
# int16 ones, and a core runs each kind at its own rate; the table says which instructions the
# int8 and fp16 paths save, not how much faster a board runs.
#
# How: Debian 12's qemu-aarch64-static (7.2) is built without TCG plugins (no -plugin), so the
# count comes from qemu's debug log, `-d in_asm,exec,nochain,strace`:
#   in_asm   prints each translation block (TB: a straight run of guest code) when it is
#            translated, one line per guest instruction;
#   exec     prints one line per TB executed ("Trace 0: HOSTPTR [cs_base/pc/flags/cflags]");
#   nochain  stops qemu from chaining TBs, so that every TB executed passes the logging;
#   strace   logs the guest's system calls in the same stream.
# Executed instructions = the sum, over exec lines, of the length of the TB at that pc. A small C
# counter (written and compiled by this script) reads the log through a pipe (`-D /dev/fd/3`;
# up to ~3e8 lines a run, never stored). It binds each translation to the exec line that follows
# it (qemu runs a TB right after translating it), keyed by pc, flags and cflags, so a pc
# translated again gets its new length; an exec line with no translation counts as "unmatched"
# (0 in every run so far); a "Stopped execution of TB chain before" line (a TB entered but not
# run) takes that TB back off (none so far). From the encodings it also counts the executed
# SDOT/UDOT, S/UMLAL and S/UMULL (vector), FMLA on f32 and FMLA on f16 vectors: which kernels ran.
# Per evaluation: `dualscale bench --model M --batch B --iters 2 --threads 1` does a warm-up and
# 2 timed evaluations and calls clock_gettime (a system call under qemu 7.2: no vDSO) right
# before and after each timed one; the counter notes its counts at every clock_gettime, so the
# instructions of each timed evaluation are the difference between the last 2 x 2 notes. This
# excludes process start, model load and the plan building, which are 3x (fp32) to 60x (int8)
# one evaluation here. `--diff 1` also runs every row at --iters 1 and shows the difference
# method ((count at --iters 2 - count at --iters 1) / 1) beside it: it agrees within 0.2% (it
# also counts the loop around the evaluation and the run-to-run noise of loading, see --verify).
# Runs are under `setarch -R` (no address randomisation); Rust's hash seeds still differ per
# run: the same evaluation counted in two runs differs by ~1e-4.
#
# tract picks its kernels from /proc/cpuinfo, which qemu 7.2 takes from the x86 host: as in
# cross/test.sh, tract's knobs say what the board would say (a72: TRACT_CPU_AARCH64_KIND=a72;
# a76: TRACT_CPU_ISA=+fp16; the dot product tract reads from the auxiliary vector, which qemu fills
# for the emulated CPU). dualscale's --precision auto computes an fp16 file in f16 on the A76 and
# upcasts it to f32 on the A72. The "tract kernels" column is what tract logged (CPU kind, ISA);
# the instruction columns show which kernels ran.
#
# Usage:
#   cross/insn-count.sh [--bin BIN] [--iters N] [--diff N1] [--dino-batch B] [--with-landscape]
#                       [--jobs J] [--cpus CPU,...] [--only REGEX] [--keep DIR] [--no-run]
#   cross/insn-count.sh --verify [--bin BIN]    the counter's own checks (see below)
#
#   --bin     the aarch64 dualscale binary (default: $CARGO_TARGET_DIR or target, then
#             aarch64-unknown-linux-gnu/release/dualscale, as `cross/build.sh pi5` prints it)
#   --iters   timed evaluations per run (default 2)
#   --diff N1 also run every row at --iters N1 and show the difference method beside the markers
#   --dino-batch  batch of the dino rows (default 100: batch 1000 logs ~10x more per evaluation)
#   --with-landscape  add the image model's 6 rows (batch 1). Its plan building alone executes
#             more than 3e8 instructions (a run was stopped after 7 minutes of logging, still
#             building the plan): hours on a 2-core machine
#   --jobs    qemu runs at a time (default 2)
#   --cpus    default cortex-a72,cortex-a76
#   --only    only the rows whose "model batch cpu [VAR=VALUE]" matches REGEX (grep -E)
#   --keep    keep the per-run counts, bench output and logs in DIR
#   --no-run  only print the table from the .count files already in --keep DIR
#
# --verify: (1) a static aarch64 program (aarch64-linux-gnu-gcc -static -nostdlib -O1) with asm
# loops whose instructions per iteration are known (plain loop 4, bl/ret loop 5, svc loop 4, NEON
# loop 6 with one SDOT, one SMLAL, one FMLA .4s, one FMLA .8h): the count difference between two
# loop lengths must equal the prediction exactly; (2) whole programs counted normally and with
# -singlestep (one instruction per TB, so no TB can end early unseen) must agree exactly: the loop
# program and `dualscale --version` (dynamic loader, relocation, Rust start-up); (3) the fp32 dino
# row, twice, by markers and by the difference method.
#
# Reproduce the table in BENCHMARKS.md. Time: the 7 default rows were run in parts on a loaded
# 2-vCPU machine, 2 at a time: the 5 rows of the first run took 14.5 minutes; one fp32 / fp16 row
# takes 2-4 minutes, one int8 row 10-30 (their plan building executes ~1.1e9 instructions, each
# block a log line), so expect 30-45 minutes; --verify took 13 minutes.
#   CARGO_TARGET_DIR=/work/target-cross cross/build.sh pi5      # prints BIN
#   cross/insn-count.sh --bin BIN
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; /^set -euo/d' >&2; exit 2; }

bin=${CARGO_TARGET_DIR:-target}/aarch64-unknown-linux-gnu/release/dualscale
iters=2
diff_iters=
dino_batch=100
jobs=2
cpus=cortex-a72,cortex-a76
only=
keep=
verify=false
run=true
landscape=false
while [ $# -gt 0 ]; do
    case $1 in
        --bin) bin=$2; shift ;;
        --iters) iters=$2; shift ;;
        --diff) diff_iters=$2; shift ;;
        --jobs) jobs=$2; shift ;;
        --dino-batch) dino_batch=$2; shift ;;
        --cpus) cpus=$2; shift ;;
        --only) only=$2; shift ;;
        --keep) keep=$2; shift ;;
        --verify) verify=true ;;
        --no-run) run=false ;;
        --with-landscape) landscape=true ;;
        -h|--help) usage ;;
        *) echo "cross/insn-count.sh: unknown argument '$1'" >&2; usage ;;
    esac
    shift
done
n2=$iters; n1=${diff_iters:-1}
if [ -n "$diff_iters" ] || $verify; then
    [ "$n2" -gt "$n1" ] || { echo "cross/insn-count.sh: --diff N1 (or --verify's 1) needs N1 < --iters N" >&2; exit 2; }
fi
sysroot=/usr/aarch64-linux-gnu
qemu=qemu-aarch64-static
command -v $qemu >/dev/null || { echo "cross/insn-count.sh: $qemu not found (cross/setup.sh)" >&2; exit 1; }

if [ -n "$keep" ]; then
    mkdir -p "$keep"; work=$(cd "$keep" && pwd)
else
    work=$(mktemp -d /tmp/insn-count.XXXXXX)
    trap 'rm -rf "$work"' EXIT
fi

# ---------------------------------------------------------------------------------------------
# The counter: reads a qemu 7.2 `-d in_asm,exec,nochain,strace` log on stdin, prints one line of
# key=value counts (marks=: the counts at each clock_gettime call).
cat > "$work/qic.c" <<'EOF'
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { K_DOT, K_MLAL, K_FMLA32, K_FMLA16, NK };
static const char *kname[NK] = {"sdot", "smlal", "fmla_f32", "fmla_f16"};

typedef struct { uint64_t pc; uint32_t flags, cflags, used, n; uint32_t k[NK]; } Tb;
static Tb *tab;
static uint64_t cap = 1 << 16, ntb;

typedef struct { uint64_t pc; uint32_t n, live; uint32_t k[NK]; } Pending;
#define NPEND 64
static Pending pend[NPEND];
static unsigned npend_next;

static uint64_t insns, execs, translations, bound, unmatched, stopped, stopped_unmatched, other, lines;
static uint64_t kc[NK];
/* With -d strace in the log: the count at each clock_gettime call (the last NMARK of them). */
#define NMARK 256
static uint64_t marks[NMARK][2 + NK], nmarks;
static uint64_t last_pc = ~0ull; static Tb *last_tb;

static uint64_t mix(uint64_t pc, uint32_t f, uint32_t c) {
    uint64_t h = pc ^ ((uint64_t)f << 21) ^ ((uint64_t)c << 43);
    h ^= h >> 33; h *= 0xff51afd7ed558ccdULL; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ULL; h ^= h >> 33;
    return h;
}
static Tb *slot(Tb *t, uint64_t c, uint64_t pc, uint32_t f, uint32_t cf) {
    uint64_t i = mix(pc, f, cf) & (c - 1);
    while (t[i].used && !(t[i].pc == pc && t[i].flags == f && t[i].cflags == cf)) i = (i + 1) & (c - 1);
    return &t[i];
}
static void grow(void) {
    uint64_t nc = cap * 2;
    Tb *nt = calloc(nc, sizeof(Tb));
    if (!nt) { perror("calloc"); exit(1); }
    for (uint64_t i = 0; i < cap; i++)
        if (tab[i].used) *slot(nt, nc, tab[i].pc, tab[i].flags, tab[i].cflags) = tab[i];
    free(tab); tab = nt; cap = nc; last_tb = NULL; last_pc = ~0ull;
}

static uint64_t hex(const char **p, const char *e) {
    const char *s = *p; uint64_t v = 0;
    if (s + 1 < e && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) s += 2;
    for (; s < e; s++) {
        char c = *s; int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else break;
        v = v << 4 | (uint64_t)d;
    }
    *p = s; return v;
}
static int starts(const char *s, const char *e, const char *w) {
    size_t n = strlen(w); return (size_t)(e - s) >= n && memcmp(s, w, n) == 0;
}

/* The TB being read from the in_asm log. */
static int in_block; static uint64_t cur_pc; static uint32_t cur_n, cur_k[NK];

static void end_block(void) {
    if (!in_block) return;
    in_block = 0;
    if (cur_n == 0) return;
    Pending *p = &pend[npend_next++ % NPEND];
    p->pc = cur_pc; p->n = cur_n; p->live = 1; memcpy(p->k, cur_k, sizeof cur_k);
    translations++;
}

static void asm_line(const char *s, const char *e) {
    /* "0x0000005500812340:  4e809420  sdot v0.4s, v1.16b, v0.4b[0]" or, without a
       disassembler, "0x...:  OBJD-T: 2004809e..." */
    const char *p = s; uint64_t pc = hex(&p, e);
    if (p >= e || *p != ':') { other++; return; }
    p++;
    while (p < e && *p == ' ') p++;
    if (starts(p, e, "OBJD-T:")) {
        p += 7; while (p < e && *p == ' ') p++;
        const char *q = p; while (q < e && *q != ' ') q++;
        if (cur_n == 0) cur_pc = pc;
        cur_n += (uint32_t)((q - p) / 8);
        return;
    }
    if (cur_n == 0) cur_pc = pc;
    cur_n++;
    /* Classify by the encoding (qemu 7.2's disassembler prints SDOT and the FP16 forms as
       ".byte"). Masks from the Arm ARM; Q (and U where given) ignored. */
    const char *q = p; uint32_t w = (uint32_t)hex(&q, e);
    if ((w & 0x9FE0FC00u) == 0x0E809400u ||      /* SDOT/UDOT (vector) */
        (w & 0x9FC0F400u) == 0x0F80E000u)        /* SDOT/UDOT (by element) */
        cur_k[K_DOT]++;
    else if ((w & 0x9F20FC00u) == 0x0E208000u || /* SMLAL/UMLAL{2} (vector) */
             (w & 0x9F20FC00u) == 0x0E20C000u || /* SMULL/UMULL{2} (vector) */
             (w & 0x9F00F400u) == 0x0F002000u || /* SMLAL/UMLAL{2} (by element) */
             (w & 0x9F00F400u) == 0x0F00A000u)   /* SMULL/UMULL{2} (by element) */
        cur_k[K_MLAL]++;
    else if ((w & 0xBFE0FC00u) == 0x0E20CC00u || /* FMLA .2s/.4s (vector) */
             (w & 0xBFC0F400u) == 0x0F801000u)   /* FMLA .2s/.4s (by element) */
        cur_k[K_FMLA32]++;
    else if ((w & 0xBFE0FC00u) == 0x0E400C00u || /* FMLA .4h/.8h (vector, FEAT_FP16) */
             (w & 0xBFC0F400u) == 0x0F001000u)   /* FMLA .4h/.8h (by element, FEAT_FP16) */
        cur_k[K_FMLA16]++;
}

static void exec_line(const char *s, const char *e) {
    /* "Trace 0: 0x7f0c2c000100 [0000000000000000/0000005500812340/00000000/00000000] sym" */
    const char *b = memchr(s, '[', (size_t)(e - s));
    if (!b) { other++; return; }
    const char *p = b + 1; uint64_t f[4] = {0}; int nf = 0;
    while (nf < 4) { f[nf++] = hex(&p, e); if (p < e && *p == '/') p++; else break; }
    if (nf != 4) { other++; return; }
    uint64_t pc = f[1]; uint32_t fl = (uint32_t)f[2], cf = (uint32_t)f[3];
    if (ntb * 2 >= cap) grow();
    Tb *t = slot(tab, cap, pc, fl, cf);
    /* A translation of this pc logged since: the TB now run is that one. */
    Pending *found = NULL;
    for (unsigned i = 0; i < NPEND; i++) {
        Pending *q = &pend[(npend_next - 1 - i) % NPEND];
        if (q->live && q->pc == pc) { if (!found) found = q; q->live = 0; }
    }
    if (found) {
        if (!t->used) { t->used = 1; t->pc = pc; t->flags = fl; t->cflags = cf; ntb++; }
        t->n = found->n; memcpy(t->k, found->k, sizeof t->k); bound++;
    } else if (!t->used) { unmatched++; last_tb = NULL; last_pc = ~0ull; return; }
    execs++; insns += t->n;
    for (int k = 0; k < NK; k++) kc[k] += t->k[k];
    last_tb = t; last_pc = pc;
}

static void stopped_line(const char *s, const char *e) {
    /* "Stopped execution of TB chain before 0x7f.. [0000005500812340] sym": that TB did not run. */
    const char *b = memchr(s, '[', (size_t)(e - s));
    if (!b) { other++; return; }
    const char *p = b + 1; uint64_t pc = hex(&p, e);
    if (last_tb && pc == last_pc) {
        insns -= last_tb->n; execs--;
        for (int k = 0; k < NK; k++) kc[k] -= last_tb->k[k];
        stopped++; last_tb = NULL; last_pc = ~0ull;
    } else stopped_unmatched++;
}

static void line(const char *s, const char *e) {
    lines++;
    if (e == s) { end_block(); return; }
    if (s[0] == '-' && starts(s, e, "----------------")) { end_block(); in_block = 1; cur_n = 0; memset(cur_k, 0, sizeof cur_k); return; }
    if (s[0] == 'T' && starts(s, e, "Trace ")) { end_block(); exec_line(s, e); return; }
    if (s[0] == 'S' && starts(s, e, "Stopped execution")) { end_block(); stopped_line(s, e); return; }
    if (in_block) {
        if (s[0] == '0' && e - s > 2 && s[1] == 'x') { asm_line(s, e); return; }
        if (starts(s, e, "IN:")) return;
    }
    if (e - s > 14 && memchr(s, '(', (size_t)(e - s))) {
        const char *c = memchr(s, ' ', (size_t)(e - s));   /* "PID clock_gettime(..." */
        if (c && starts(c + 1, e, "clock_gettime(")) {
            uint64_t *m = marks[nmarks++ % NMARK];
            m[0] = insns; m[1] = execs;
            for (int k = 0; k < NK; k++) m[2 + k] = kc[k];
        }
    }
    other++;
}

int main(void) {
    tab = calloc(cap, sizeof(Tb));
    size_t bufsz = 1 << 22, len = 0;
    char *buf = malloc(bufsz);
    if (!tab || !buf) { perror("malloc"); return 1; }
    for (;;) {
        ssize_t r = read(0, buf + len, bufsz - len);
        if (r < 0) { perror("read"); return 1; }
        if (r == 0) break;
        len += (size_t)r;
        char *s = buf, *end = buf + len, *nl;
        while ((nl = memchr(s, '\n', (size_t)(end - s)))) { line(s, nl); s = nl + 1; }
        len = (size_t)(end - s);
        memmove(buf, s, len);
        if (len == bufsz) { bufsz *= 2; buf = realloc(buf, bufsz); if (!buf) { perror("realloc"); return 1; } }
    }
    if (len) line(buf, buf + len);
    end_block();
    uint64_t unbound = 0;
    for (unsigned i = 0; i < NPEND; i++) unbound += pend[i].live;
    printf("insns=%llu execs=%llu translations=%llu bound=%llu unbound=%llu unmatched=%llu stopped=%llu "
           "stopped_unmatched=%llu other=%llu lines=%llu",
           (unsigned long long)insns, (unsigned long long)execs, (unsigned long long)translations,
           (unsigned long long)bound, (unsigned long long)unbound, (unsigned long long)unmatched,
           (unsigned long long)stopped, (unsigned long long)stopped_unmatched, (unsigned long long)other,
           (unsigned long long)lines);
    for (int k = 0; k < NK; k++) printf(" %s=%llu", kname[k], (unsigned long long)kc[k]);
    printf(" clock_calls=%llu marks=", (unsigned long long)nmarks);
    uint64_t first = nmarks > NMARK ? nmarks - NMARK : 0;
    /* each mark: insns:execs:sdot:smlal:fmla_f32:fmla_f16 */
    for (uint64_t i = first; i < nmarks; i++) {
        printf("%s", i > first ? "," : "");
        for (int j = 0; j < 2 + NK; j++) printf("%s%llu", j ? ":" : "", (unsigned long long)marks[i % NMARK][j]);
    }
    printf("\n");
    return 0;
}
EOF
cc -O2 -Wall -o "$work/qic" "$work/qic.c"

# What tract would read from the board's /proc/cpuinfo, as its knobs (tract_knobs).
source "$(dirname "$0")/tract-knobs.sh"

# count TAG CPU [QEMU ARGS --] PROGRAM ARGS...: runs PROGRAM under qemu with the log piped into
# the counter; TAG.count gets the counts, TAG.out / TAG.err the program's stdout / stderr.
count() {
    local tag=$1 cpu=$2; shift 2
    local qargs=()
    if [ "${1:-}" = --qemu ]; then shift; while [ "$1" != -- ]; do qargs+=("$1"); shift; done; shift; fi
    # fd 3 is the pipe to the counter; the program's own stdout/stderr go to files.
    set +e
    setarch "$(uname -m)" -R $qemu -L "$sysroot" -cpu "$cpu" "${qargs[@]}" \
        -d in_asm,exec,nochain,strace -D /dev/fd/3 "$@" 3>&1 1>"$work/$tag.out" 2>"$work/$tag.err" \
        | "$work/qic" > "$work/$tag.count"
    local st=("${PIPESTATUS[@]}")
    set -e
    if [ "${st[0]}" -ne 0 ] || [ "${st[1]}" -ne 0 ]; then
        echo "cross/insn-count.sh: $tag: qemu exit ${st[0]}, counter exit ${st[1]}; stderr:" >&2
        tail -5 "$work/$tag.err" >&2
        return 1
    fi
    if ! grep -q ' unmatched=0 ' "$work/$tag.count"; then
        echo "cross/insn-count.sh: $tag: exec lines without a translation: $(cat "$work/$tag.count")" >&2
    fi
}

# key KEY FILE: the value of KEY=... in a counter line.
key() { tr ' ' '\n' < "$2" | sed -n "s/^$1=//p"; }

# bench_run TAG CPU MODEL BATCH N [VAR=VALUE...]: one bench run of one row, counted.
bench_run() {
    local tag=$1 cpu=$2 model=$3 batch=$4 n=$5; shift 5
    (
        export "$(tract_knobs "$cpu")" RUST_LOG=warn,dualscale=info,tract_linalg=debug
        for e in "$@"; do export "${e?}"; done
        count "$tag.$n" "$cpu" "$bin" bench --model "models/$model.onnx" --batch "$batch" \
            --iters "$n" --threads 1 --json
    )
}

wait_slot() { while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done; }

[ -x "$bin" ] || { echo "cross/insn-count.sh: no binary at $bin (--bin; cross/build.sh pi5 builds it)" >&2; exit 1; }
file_desc=$(file -b "$bin" | cut -d, -f1-2)

# ---------------------------------------------------------------------------------------------
if $verify; then
    t0=$(date +%s)
    # Freestanding (no libc: Debian's cross gcc here comes without the arm64 libc headers and
    # static libc), so the whole program is these lines: _start, argument parsing, a loop, exit.
    cat > "$work/loops.c" <<'EOF'
__asm__(".text\n.globl _start\n_start:\n\tmov x0, sp\n\tbl cmain\n\tmov x8, #93\n\tsvc #0\n"
        /* leaf: 2 instructions (add, ret) */
        ".globl leaf\n.type leaf,%function\nleaf:\n\tadd x11, x11, #1\n\tret\n");
static int eq(const char *a, const char *b) { while (*a && *a == *b) a++, b++; return *a == *b; }
static long num(const char *s) { long v = 0; while (*s >= '0' && *s <= '9') v = v * 10 + (*s++ - '0'); return v; }
long cmain(long *sp) {
    long argc = sp[0]; char **argv = (char **)(sp + 1);
    long n = argc > 2 ? num(argv[2]) : 1000;
    const char *which = argc > 1 ? argv[1] : "plain";
    if (eq(which, "plain"))      /* 4 per iteration */
        __asm__ volatile("1: add x9, x9, #1\n\tadd x10, x10, #2\n\tsubs %0, %0, #1\n\tb.ne 1b"
                         : "+r"(n) :: "x9", "x10", "cc");
    else if (eq(which, "call"))  /* bl, subs, b.ne + leaf's add, ret: 5 per iteration */
        __asm__ volatile("1: bl leaf\n\tsubs %0, %0, #1\n\tb.ne 1b" : "+r"(n) :: "x11", "x30", "cc", "memory");
    else if (eq(which, "svc"))   /* mov, svc (getpid), subs, b.ne: 4 per iteration */
        __asm__ volatile("1: mov x8, #172\n\tsvc #0\n\tsubs %0, %0, #1\n\tb.ne 1b" : "+r"(n) :: "x0", "x8", "cc", "memory");
    else if (eq(which, "neon"))  /* sdot, smlal, fmla .4s, fmla .8h, subs, b.ne: 6 per iteration */
        __asm__ volatile("1: sdot v0.4s, v1.16b, v2.4b[0]\n\tsmlal v3.4s, v4.4h, v5.h[1]\n\t"
                         "fmla v6.4s, v7.4s, v16.s[0]\n\tfmla v17.8h, v18.8h, v15.h[0]\n\t"
                         "subs %0, %0, #1\n\tb.ne 1b"
                         : "+r"(n) :: "v0", "v3", "v6", "v17", "cc");
    return 0;
}
EOF
    aarch64-linux-gnu-gcc -static -nostdlib -ffreestanding -fno-stack-protector -O1 \
        -march=armv8.2-a+dotprod+fp16 -o "$work/loops" "$work/loops.c"
    echo "## Counter checks ($(date -u +%F\ %H:%M) UTC, $($qemu --version | head -1))"
    echo
    echo "| program | CPU | run A | run B | count A | count B | B - A | predicted | match |"
    echo "|---|---|---|---|---:|---:|---:|---:|---|"
    for spec in "plain 4" "call 5" "svc 4" "neon 6"; do
        set -- $spec; which=$1; per=$2
        a=100000; b=300000
        count "loop-$which-a" cortex-a76 "$work/loops" "$which" $a
        count "loop-$which-b" cortex-a76 "$work/loops" "$which" $b
        ca=$(key insns "$work/loop-$which-a.count"); cb=$(key insns "$work/loop-$which-b.count")
        pred=$(( per * (b - a) ))
        echo "| loops $which | cortex-a76 | n=$a | n=$b | $ca | $cb | $(( cb - ca )) | $pred | $([ $(( cb - ca )) -eq $pred ] && echo yes || echo NO) |"
        if [ "$which" = neon ]; then
            for k in sdot smlal fmla_f32 fmla_f16; do
                ka=$(key $k "$work/loop-$which-a.count"); kb=$(key $k "$work/loop-$which-b.count")
                echo "| loops neon: executed $k | cortex-a76 | n=$a | n=$b | $ka | $kb | $(( kb - ka )) | $(( b - a )) | $([ $(( kb - ka )) -eq $(( b - a )) ] && echo yes || echo NO) |"
            done
        fi
    done
    echo
    echo "Whole-process counts, TB-length method against -singlestep (one instruction per TB):"
    echo
    echo "| program | CPU | normal | -singlestep | equal | normal: TB execs, translations, stopped, unmatched |"
    echo "|---|---|---:|---:|---|---|"
    ss() { # TAG CPU PROGRAM ARGS...
        local tag=$1 cpu=$2; shift 2
        count "$tag-n" "$cpu" "$@"
        count "$tag-s" "$cpu" --qemu -singlestep -- "$@"
        local x y; x=$(key insns "$work/$tag-n.count"); y=$(key insns "$work/$tag-s.count")
        echo "| ${*##*/} | $cpu | $x | $y | $([ "$x" = "$y" ] && echo yes || echo "no ($(( y - x )))") |" \
            "$(key execs "$work/$tag-n.count"), $(key translations "$work/$tag-n.count"), $(key stopped "$work/$tag-n.count"), $(key unmatched "$work/$tag-n.count") |"
    }
    ss ss-loops cortex-a72 "$work/loops" call 20000
    ss ss-version cortex-a72 "$bin" --version
    ss ss-version76 cortex-a76 "$bin" --version
    echo
    # The per-evaluation methods against each other, and run to run: the fp32 dino row (its plan
    # is cheap to log; an int8 plan executes ~1.1e9 instructions, far too many for -singlestep).
    echo "Per evaluation, dino-dualscale batch $dino_batch, cortex-a76: markers (each timed evaluation) against the difference method ((run at --iters $n2 - run at --iters $n1) / $(( n2 - n1 ))), two tries:"
    echo
    echo "| try | markers, each timed eval | difference method | whole run at --iters $n1 |"
    echo "|---|---:|---:|---:|"
    for try in 1 2; do
        for n in $n1 $n2; do bench_run "rep$try" cortex-a76 dino-dualscale "$dino_batch" "$n"; done
        m=$(key marks "$work/rep$try.$n2.count" | tr ',' '\n' | tail -n $(( 2 * n2 )) | cut -d: -f1 | paste -d' ' - - |
            awk '{printf "%s%d", (NR>1?" / ":""), $2-$1}')
        d=$(( ($(key insns "$work/rep$try.$n2.count") - $(key insns "$work/rep$try.$n1.count")) / (n2 - n1) ))
        echo "| $try | $m | $d | $(key insns "$work/rep$try.$n1.count") |"
    done
    echo
    echo "(verify took $(( $(date +%s) - t0 )) s)"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# The table. Rows in order of priority (the first ones answer the int8 question).
t0=$(date +%s)
rows=(
    "dino-dualscale $dino_batch cortex-a72"
    "dino-dualscale-int8 $dino_batch cortex-a72"
    "dino-dualscale-fp16 $dino_batch cortex-a72"
    "dino-dualscale $dino_batch cortex-a76"
    "dino-dualscale-int8 $dino_batch cortex-a76"
    "dino-dualscale-fp16 $dino_batch cortex-a76"
    # The A76 without its dot product (tract's knob): SDOT against SMLAL on one core.
    "dino-dualscale-int8 $dino_batch cortex-a76 TRACT_DOTPROD_DISABLE=1"
)
# The image model: its plan building alone executes > 3e8 instructions (not finished after 7 min
# of logging at batch 1), hours for the six rows on a 2-core machine, so only on request.
$landscape && rows+=(
    "landscape-dualscale 1 cortex-a72"
    "landscape-dualscale-int8 1 cortex-a72"
    "landscape-dualscale-fp16 1 cortex-a72"
    "landscape-dualscale 1 cortex-a76"
    "landscape-dualscale-int8 1 cortex-a76"
    "landscape-dualscale-fp16 1 cortex-a76"
)
selected=()
for row in "${rows[@]}"; do
    set -- $row
    case ",$cpus," in *",$3,"*) ;; *) continue ;; esac
    if [ -z "$only" ] || echo "$row" | grep -Eq -- "$only"; then selected+=("$row"); fi
done
# tag MODEL BATCH CPU [VAR=VALUE]: the file name stem of a row's runs.
tag() { local t="$1-$2-$3"; [ -n "${4:-}" ] && t="$t-$(echo "${4%%=*}" | tr 'A-Z_' 'a-z-')"; echo "$t"; }
$run && for r in "${selected[@]}"; do
    set -- $r
    wait_slot
    bench_run "$(tag "$@")" "$3" "$1" "$2" "$n2" ${4:+"$4"} &
    if [ -n "$diff_iters" ]; then wait_slot; bench_run "$(tag "$@")" "$3" "$1" "$2" "$n1" ${4:+"$4"} & fi
done
wait

# evals FILE N: the last N timed evaluations of a run, one line each: insns execs sdot smlal f32 f16.
# bench calls clock_gettime just before and after each timed evaluation (the last 2 N calls of
# the run; -d strace puts the calls in the log, so the counter notes its counts at each).
evals() {
    key marks "$1" | tr ',' '\n' | tail -n $(( 2 * $2 )) | tr ':' ' ' | paste -d' ' - - |
        awk -v n="$2" '{h=NF/2; for (i=1;i<=h;i++) printf "%s%d", (i>1?" ":""), $(i+h)-$i; print ""} END{if (NR!=n) exit 1}'
}
fmt_m() { awk -v x="$1" 'BEGIN{printf "%.2f", x/1e6}'; }
echo "Guest (aarch64) instructions per model evaluation, qemu-user $($qemu --version | head -1 | awk '{print $3}'), counted by cross/insn-count.sh (\`-d in_asm,exec,nochain,strace\`), one thread; each run: \`bench --iters $n2\` (one warm-up and $n2 timed evaluations; the count between the clock_gettime calls around each timed one):"
echo
echo "| model | batch | CPU | tract kernels (log) | computed in | instructions / eval (M) | / fp32 (same CPU) | per sample | the $n2 timed evals, each |$([ -n "$diff_iters" ] && echo " difference method (M) |") SDOT/UDOT (M) | SMLAL/SMULL (M) | FMLA f32 (M) | FMLA f16 (M) | TBs run / eval (M) |"
echo "|---|---:|---|---|---|---:|---:|---:|---:|$([ -n "$diff_iters" ] && echo "---:|")---:|---:|---:|---:|---:|"
declare -A per_eval
for r in "${selected[@]}"; do
    set -- $r; model=$1 batch=$2 cpu=$3 extra_env=${4:-}; tag=$(tag "$@")
    b="$work/$tag.$n2.count"
    if [ ! -s "$b" ] || ! evals "$b" "$n2" > "$work/$tag.evals"; then
        echo "| $model | $batch | $cpu${extra_env:+, $extra_env} | run failed or incomplete (see $work/$tag.$n2.err) |"; continue
    fi
    mean() { awk -v c="$1" '{s+=$c} END{printf "%.0f", s/NR}' "$work/$tag.evals"; }
    pe=$(mean 1)
    base=${model%-fp16}; base=${base%-int8}
    ratio=-
    if [ -z "$extra_env" ] && [ "$base" = "$model" ]; then per_eval[$base-$batch-$cpu]=$pe; fi
    if [ -n "${per_eval[$base-$batch-$cpu]:-}" ]; then ratio=$(awk -v x="$pe" -v y="${per_eval[$base-$batch-$cpu]}" 'BEGIN{printf "%.3f", x/y}'); fi
    each=$(awk '{printf "%s%d", (NR>1?" / ":""), $1}' "$work/$tag.evals")
    diffcol=
    if [ -n "$diff_iters" ]; then
        a="$work/$tag.$n1.count"
        diffcol=" $(awk -v x="$(key insns "$b")" -v y="$(key insns "$a")" -v d=$(( n2 - n1 )) 'BEGIN{printf "%.3f", (x-y)/d/1e6}') |"
    fi
    err="$work/$tag.$n2.err"
    kind=$(sed -n 's/.*CPU optimisation: \([A-Za-z0-9]*\).*/\1/p' "$err" | head -1)
    isa=$(sed -n 's/.*ISA: \([a-z0-9,]*\).*/\1/p' "$err" | head -1)
    case $model in
        *-int8) if [ "$(mean 3)" != 0 ]; then computed="int8 products (SDOT), rest f32"
                elif [ "$(mean 4)" != 0 ]; then computed="int8 products (SMLAL), rest f32"
                else computed="f32 (int8 weights dequantized at load)"; fi ;;
        *) computed=$(sed -n 's/.*fp16 model: computing in \([A-Za-z0-9]*\).*/\1/p' "$err" | head -1)
           computed=${computed:-F32}; computed=${computed,,} ;;
    esac
    echo "| $model | $batch | $cpu${extra_env:+, $extra_env} | ${kind:-?}, ISA ${isa:-?} | $computed | $(fmt_m "$pe") | $ratio |" \
        "$(awk -v x="$pe" -v b="$batch" 'BEGIN{v=x/b; if (v>=1e6) printf "%.2f M", v/1e6; else printf "%.1f k", v/1e3}') | $each |$diffcol" \
        "$(fmt_m "$(mean 3)") | $(fmt_m "$(mean 4)") | $(fmt_m "$(mean 5)") | $(fmt_m "$(mean 6)") | $(fmt_m "$(mean 2)") |"
done
echo
echo "Binary: $bin ($file_desc); $(( $(date +%s) - t0 )) s for ${#selected[@]} rows, $jobs runs at a time."
bad=$(grep -L ' unmatched=0 ' "$work"/*.count || true)
if [ -n "$bad" ]; then echo "WARNING: exec lines without a translation in: $bad"; fi
stops=$(cat "$work"/*.count | tr ' ' '\n' | sed -n 's/^stopped=//p' | awk '{s+=$1} END{print s+0}')
echo "TBs entered but not run (\"Stopped execution\"), all runs: $stops. Whole-run counts: the .count files (--keep DIR)."

# cross/tract-knobs.sh: sourced by cross/test.sh and cross/insn-count.sh.
# qemu 7.2 shows programs the x86 host's /proc/cpuinfo, from which tract picks its kernels on ARM;
# tract_knobs CPU prints the tract environment knob that makes it pick what it would pick on a
# board with that core (qemu's -cpu / QEMU_CPU name).
tract_knobs() {
    case $1 in
        cortex-a53) echo TRACT_CPU_AARCH64_KIND=a53 ;;
        cortex-a72) echo TRACT_CPU_AARCH64_KIND=a72 ;;
        # The A76 is no special kind for tract; what matters is asimdhp in the Features line.
        cortex-a76) echo TRACT_CPU_ISA=+fp16 ;;
        cortex-a7|cortex-a15|cortex-a8) echo TRACT_CPU_ARM32_NEON=true ;;
        *) echo "cross/$(basename "$0"): no tract knobs known for CPU '$1'" >&2; return 1 ;;
    esac
}

//! What the CPU we run on offers (SIMD, native f16 arithmetic, dot product), detected once at
//! start-up, and the compute precision chosen from it.
//!
//! Detection asks the kernel, not the compiler: `std::arch::is_*_feature_detected!` where it is
//! stable (x86_64, aarch64), `getauxval(AT_HWCAP)` on 32-bit ARM (the std macro is unstable
//! there). Names follow Linux's `/proc/cpuinfo`, so a user can compare with `cat /proc/cpuinfo`.
//! Under qemu-user the features are those of the emulated CPU (`QEMU_CPU`), because qemu fills
//! the auxiliary vector for it; qemu 7.2 does not emulate `/proc/cpuinfo`, so the CPU model name
//! is unknown there (and tract, which reads `/proc/cpuinfo`, picks its generic kernels).
//!
//! This module never panics on unknown hardware, chooses no device (that is `device.rs`) and
//! loads no model; it only rewrites a graph's float type when asked to.

use std::fmt;
use std::str::FromStr;

use tract_core::floats::FloatPrecisionTranslator;
use tract_core::internal::{DatumType, TractResult, TypedModel};
use tract_core::transform::ModelTransform;

/// What the CPU offers, as detected at start-up by [`detect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuInfo {
    /// `std::env::consts::ARCH` of this build: "aarch64", "arm", "x86_64", ...
    pub arch: &'static str,
    /// The core's name ("Cortex-A76") from `/proc/cpuinfo` where it can be known.
    pub model_name: Option<String>,
    /// The features this program cares about that the CPU has, in `/proc/cpuinfo` spelling.
    pub features: Vec<&'static str>,
    /// Native f16 arithmetic that tract has kernels for: aarch64 FEAT_FP16 (`asimdhp`).
    pub native_f16: bool,
    /// Integer dot product (aarch64 FEAT_DotProd, `asimddp`), used by tract's int8 kernels.
    pub dot_product: bool,
}

/// The float type a model's graph is computed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputeDtype {
    F32,
    F16,
}

impl fmt::Display for ComputeDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ComputeDtype::F32 => "f32",
            ComputeDtype::F16 => "f16",
        })
    }
}

/// The precision the user asked for (`--precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f16 where the CPU computes it natively, f32 elsewhere.
    #[default]
    Auto,
    F32,
    F16,
}

/// A `--precision` value that is none of the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision `{0}`; expected one of: auto, f32, f16")]
pub struct ParsePrecisionError(String);

impl FromStr for Precision {
    type Err = ParsePrecisionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Precision::Auto),
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            _ => Err(ParsePrecisionError(s.to_string())),
        }
    }
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::Auto, Precision::F32, Precision::F16];

    pub fn name(self) -> &'static str {
        match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Chooses the dtype the model is computed in, and says why (a line for the log).
///
/// `auto` computes an f16 model in f16 only where the CPU has native f16 arithmetic and upcasts
/// it to f32 elsewhere: tract's scalar f16 fallback is about 230x slower than its f32 kernels.
/// `auto` never narrows an f32 model. An explicit `f16` is honoured on any CPU, with a warning
/// logged here when the CPU lacks native f16.
pub fn compute_precision(requested: Precision, model_is_f16: bool, cpu: &CpuInfo) -> (ComputeDtype, &'static str) {
    match (requested, model_is_f16, cpu.native_f16) {
        (Precision::Auto, true, true) => (ComputeDtype::F16, "f16 model on a CPU with native f16 arithmetic (FEAT_FP16)"),
        (Precision::Auto, true, false) => (
            ComputeDtype::F32,
            "f16 model upcast to f32: this CPU has no native f16 arithmetic, where tract's f16 \
             path is ~230x slower",
        ),
        (Precision::Auto, false, _) => (ComputeDtype::F32, "f32 model computed in f32"),
        (Precision::F32, true, _) => (ComputeDtype::F32, "f32 requested: f16 model upcast to f32"),
        (Precision::F32, false, _) => (ComputeDtype::F32, "f32 requested"),
        (Precision::F16, _, true) => (ComputeDtype::F16, "f16 requested, on a CPU with native f16 arithmetic (FEAT_FP16)"),
        (Precision::F16, _, false) => {
            let reason = "f16 requested on a CPU without native f16 arithmetic: tract falls back \
                          to scalar f16 code, ~230x slower than f32; use --precision auto or f32";
            log::warn!("{reason}");
            (ComputeDtype::F16, reason)
        }
    }
}

/// Rewrites an f16 graph to compute in f32 (tract's `f16_to_f32` transform): every f16 fact,
/// constant and op becomes f32, inputs and outputs included, so the caller then feeds and reads
/// f32 tensors. Apply it to the typed (decluttered) model, before `into_optimized`.
pub fn upcast_f16_to_f32(model: TypedModel) -> TractResult<TypedModel> {
    FloatPrecisionTranslator::new(DatumType::F16, DatumType::F32).transform_into(model)
}

/// Detects what the CPU offers. Cheap (no allocation beyond the result, one small file read), but
/// meant to be called once at start-up and the result passed around.
pub fn detect() -> CpuInfo {
    let features = arch_features();
    let native_f16 = cfg!(target_arch = "aarch64") && features.contains(&"asimdhp");
    let dot_product = cfg!(target_arch = "aarch64") && features.contains(&"asimddp");
    let model_name = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| model_name(&c));
    CpuInfo { arch: std::env::consts::ARCH, model_name, features, native_f16, dot_product }
}

#[cfg(target_arch = "x86_64")]
fn arch_features() -> Vec<&'static str> {
    let mut found = Vec::new();
    // What tract's x86 kernels dispatch on; F16C only converts, it does not compute in f16.
    if std::arch::is_x86_feature_detected!("avx2") {
        found.push("avx2");
    }
    if std::arch::is_x86_feature_detected!("fma") {
        found.push("fma");
    }
    if std::arch::is_x86_feature_detected!("avx512f") {
        found.push("avx512f");
    }
    if std::arch::is_x86_feature_detected!("f16c") {
        found.push("f16c");
    }
    found
}

#[cfg(target_arch = "aarch64")]
fn arch_features() -> Vec<&'static str> {
    let mut found = Vec::new();
    if std::arch::is_aarch64_feature_detected!("neon") {
        found.push("asimd");
    }
    // Rust's "fp16" is FEAT_FP16: scalar (fphp) and vector (asimdhp) half-precision arithmetic.
    if std::arch::is_aarch64_feature_detected!("fp16") {
        found.push("asimdhp");
    }
    if std::arch::is_aarch64_feature_detected!("dotprod") {
        found.push("asimddp");
    }
    if std::arch::is_aarch64_feature_detected!("i8mm") {
        found.push("i8mm");
    }
    // Reported because the Pi 3 / Zero 2 / Pi 4 cores lack it: a `target-cpu` build must not
    // assume it (see cross/build.sh).
    if std::arch::is_aarch64_feature_detected!("aes") {
        found.push("aes");
    }
    found
}

#[cfg(all(target_arch = "arm", target_os = "linux"))]
fn arch_features() -> Vec<&'static str> {
    // Bits of AT_HWCAP on 32-bit ARM (linux/arch/arm/include/uapi/asm/hwcap.h).
    const HWCAP_NEON: libc::c_ulong = 1 << 12;
    const HWCAP_VFPV3: libc::c_ulong = 1 << 13;
    const HWCAP_VFPV4: libc::c_ulong = 1 << 16;
    // SAFETY: getauxval reads the auxiliary vector the kernel (or qemu-user) gave the process;
    // it has no preconditions and returns 0 for an absent entry.
    let hwcap = unsafe { libc::getauxval(libc::AT_HWCAP) };
    [(HWCAP_NEON, "neon"), (HWCAP_VFPV3, "vfpv3"), (HWCAP_VFPV4, "vfpv4")]
        .into_iter()
        .filter(|(bit, _)| hwcap & bit != 0)
        .map(|(_, name)| name)
        .collect()
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", all(target_arch = "arm", target_os = "linux"))))]
fn arch_features() -> Vec<&'static str> {
    Vec::new()
}

/// The core's name from `/proc/cpuinfo`: x86's `model name`, ARM's implementer and part numbers.
///
/// On ARM only the `CPU implementer` / `CPU part` lines are trusted: under qemu-user the file is
/// the host's, and its x86 `model name` would name a CPU the program does not run on.
fn model_name(cpuinfo: &str) -> Option<String> {
    let field = |key: &str| {
        cpuinfo.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    if cfg!(any(target_arch = "x86", target_arch = "x86_64")) {
        return field("model name");
    }
    if !cfg!(any(target_arch = "arm", target_arch = "aarch64")) {
        return None;
    }
    let implementer = parse_hex(&field("CPU implementer")?)?;
    // big.LITTLE parts list several parts; the largest number is the biggest core here.
    let part = cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(k, _)| k.trim() == "CPU part")
        .filter_map(|(_, v)| parse_hex(v.trim()))
        .max()?;
    Some(match arm_core_name(implementer, part) {
        Some(name) => name.to_string(),
        None => format!("implementer {implementer:#04x} part {part:#05x}"),
    })
}

fn parse_hex(s: &str) -> Option<u32> {
    u32::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// The cores of the boards this project targets, and their near relatives.
fn arm_core_name(implementer: u32, part: u32) -> Option<&'static str> {
    Some(match (implementer, part) {
        (0x41, 0xd03) => "Cortex-A53", // Pi 3, Zero 2 W
        (0x41, 0xd04) => "Cortex-A35",
        (0x41, 0xd05) => "Cortex-A55",
        (0x41, 0xd07) => "Cortex-A57", // Jetson Nano
        (0x41, 0xd08) => "Cortex-A72", // Pi 4, Pi 400, CM4
        (0x41, 0xd09) => "Cortex-A73",
        (0x41, 0xd0a) => "Cortex-A75",
        (0x41, 0xd0b) => "Cortex-A76", // Pi 5
        (0x41, 0xd0c) => "Neoverse-N1",
        (0x41, 0xd0d) => "Cortex-A77",
        (0x41, 0xd41) => "Cortex-A78",
        (0x41, 0xd42) => "Cortex-A78AE", // Jetson Orin
        (0x41, 0xd4b) => "Cortex-A78C",
        (0x41, 0xc07) => "Cortex-A7",     // Pi 2 v1.1
        (0x4e, 0x004) => "NVIDIA Carmel", // Jetson Xavier
        _ => return None,
    })
}

impl fmt::Display for CpuInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.arch, self.model_name.as_deref().unwrap_or("model unknown"))?;
        let features = if self.features.is_empty() { "none detected".to_string() } else { self.features.join(" ") };
        write!(f, ", features: {features}")?;
        write!(f, ", native f16: {}", yes_no(self.native_f16))?;
        write!(f, ", dot product: {}", yes_no(self.dot_product))?;
        // tract chooses its kernels from its own probe (/proc/cpuinfo on ARM); saying what it
        // saw explains a slow run where the two disagree (qemu-user, unusual kernels).
        write!(f, ", tract kernels for: {:?}", tract_core::tract_linalg::isa::native())
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(native_f16: bool) -> CpuInfo {
        CpuInfo {
            arch: "aarch64",
            model_name: None,
            features: if native_f16 { vec!["asimd", "asimdhp"] } else { vec!["asimd"] },
            native_f16,
            dot_product: native_f16,
        }
    }

    #[test]
    fn precision_parses_its_three_names_and_rejects_others() {
        assert_eq!("auto".parse(), Ok(Precision::Auto));
        assert_eq!("F32".parse(), Ok(Precision::F32));
        assert_eq!("f16".parse(), Ok(Precision::F16));
        let err = "bf16".parse::<Precision>().unwrap_err();
        assert_eq!(err.to_string(), "unknown precision `bf16`; expected one of: auto, f32, f16");
        for p in [Precision::Auto, Precision::F32, Precision::F16] {
            assert_eq!(p.to_string().parse(), Ok(p));
        }
    }

    #[test]
    fn auto_computes_f16_models_in_f16_only_with_native_f16() {
        assert_eq!(compute_precision(Precision::Auto, true, &cpu(true)).0, ComputeDtype::F16);
        let (dtype, reason) = compute_precision(Precision::Auto, true, &cpu(false));
        assert_eq!(dtype, ComputeDtype::F32);
        assert!(reason.contains("upcast"), "{reason}");
    }

    #[test]
    fn auto_never_narrows_an_f32_model() {
        for native in [false, true] {
            assert_eq!(compute_precision(Precision::Auto, false, &cpu(native)).0, ComputeDtype::F32);
        }
    }

    #[test]
    fn explicit_requests_are_honoured_and_f16_without_hardware_says_why() {
        for native in [false, true] {
            for model_is_f16 in [false, true] {
                let c = cpu(native);
                assert_eq!(compute_precision(Precision::F32, model_is_f16, &c).0, ComputeDtype::F32);
                assert_eq!(compute_precision(Precision::F16, model_is_f16, &c).0, ComputeDtype::F16);
            }
        }
        let (_, reason) = compute_precision(Precision::F16, true, &cpu(false));
        assert!(reason.contains("without native f16"), "{reason}");
    }

    #[test]
    fn arm_model_name_comes_from_part_numbers_and_ignores_a_foreign_model_name() {
        let pi5 = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull \
                   sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n\
                   CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\n\
                   CPU part\t: 0xd0b\nCPU revision\t: 1\n";
        let x86_host = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\n";
        if cfg!(any(target_arch = "arm", target_arch = "aarch64")) {
            assert_eq!(model_name(pi5).as_deref(), Some("Cortex-A76"));
            assert_eq!(model_name(x86_host), None);
            let odd = pi5.replace("0xd0b", "0xfff");
            assert_eq!(model_name(&odd).as_deref(), Some("implementer 0x41 part 0xfff"));
        } else if cfg!(target_arch = "x86_64") {
            assert_eq!(model_name(x86_host).as_deref(), Some("Intel(R) Xeon(R)"));
            assert_eq!(model_name(pi5), None);
        }
    }

    #[test]
    fn detection_is_consistent_with_this_build() {
        let info = detect();
        assert_eq!(info.arch, std::env::consts::ARCH);
        assert_eq!(info.native_f16, info.features.contains(&"asimdhp"));
        assert_eq!(info.dot_product, info.features.contains(&"asimddp"));
        if !cfg!(target_arch = "aarch64") {
            assert!(!info.native_f16 && !info.dot_product, "{info}");
        }
        if cfg!(target_arch = "aarch64") {
            // Advanced SIMD is mandatory in the aarch64 Linux ABI.
            assert!(info.features.contains(&"asimd"), "{info}");
        }
        let shown = info.to_string();
        assert!(shown.starts_with(info.arch) && shown.contains("native f16"), "{shown}");
    }

    /// What a CPU model named in `QEMU_CPU` must be detected as. The cross scripts run the suite
    /// under qemu-user with `QEMU_CPU=<model>` and `DUALSCALE_EXPECT_CPU=<model>` set together.
    struct Expected {
        arch: &'static str,
        has: &'static [&'static str],
        lacks: &'static [&'static str],
        precision_for_f16_model: ComputeDtype,
    }

    fn expected(model: &str) -> Option<Expected> {
        use ComputeDtype::*;
        Some(match model {
            // Pi 3 / Zero 2 W and Pi 4: ARMv8.0, no FP16, no dot product, no crypto in the Pi SoCs
            // (qemu's models do have AES, so "aes" is not checked here).
            "cortex-a53" | "cortex-a72" => {
                Expected { arch: "aarch64", has: &["asimd"], lacks: &["asimdhp", "asimddp"], precision_for_f16_model: F32 }
            }
            // Pi 5 (and Orin's A78AE): ARMv8.2 with FP16 and dot product.
            "cortex-a76" | "neoverse-n1" => {
                Expected { arch: "aarch64", has: &["asimd", "asimdhp", "asimddp"], lacks: &[], precision_for_f16_model: F16 }
            }
            // 32-bit: Cortex-A7/A15 have NEON and VFPv4 (what Pi 2-5 offer in AArch32 mode).
            "cortex-a7" | "cortex-a15" => Expected { arch: "arm", has: &["neon", "vfpv4"], lacks: &[], precision_for_f16_model: F32 },
            // Cortex-A8: NEON but only VFPv3, the armv7 target's baseline.
            "cortex-a8" => Expected { arch: "arm", has: &["neon", "vfpv3"], lacks: &["vfpv4"], precision_for_f16_model: F32 },
            _ => return None,
        })
    }

    #[test]
    fn detection_matches_the_emulated_cpu() {
        let Ok(model) = std::env::var("DUALSCALE_EXPECT_CPU") else {
            eprintln!("skipped: DUALSCALE_EXPECT_CPU is not set (cross/test.sh sets it with QEMU_CPU)");
            return;
        };
        if let Ok(qemu_cpu) = std::env::var("QEMU_CPU") {
            assert_eq!(qemu_cpu, model, "QEMU_CPU and DUALSCALE_EXPECT_CPU must name the same CPU");
        }
        let want = expected(&model).unwrap_or_else(|| panic!("DUALSCALE_EXPECT_CPU={model} is not a CPU this test knows"));
        let info = detect();
        assert_eq!(info.arch, want.arch, "{model} is an {} CPU, this build is {}", want.arch, info.arch);
        for f in want.has {
            assert!(info.features.contains(f), "{model} has {f}, detected: {info}");
        }
        for f in want.lacks {
            assert!(!info.features.contains(f), "{model} lacks {f}, detected: {info}");
        }
        let (dtype, reason) = compute_precision(Precision::Auto, true, &info);
        assert_eq!(dtype, want.precision_for_f16_model, "{model}: {reason}");
        eprintln!("{model}: {info}; an f16 model computes in {dtype} ({reason})");
    }

    #[test]
    fn upcast_turns_an_f16_graph_into_an_f32_one_that_computes_the_same() -> TractResult<()> {
        use tract_core::internal::*;
        use tract_core::prelude::f16;
        let mut model = TypedModel::default();
        let x = model.add_source("x", f16::fact([3]))?;
        let c = model.add_const("c", tensor1(&[f16::from_f32(0.5); 3]))?;
        let y = model.wire_node("y", tract_core::ops::math::add(), &[x, c])?;
        model.select_output_outlets(&y)?;

        let model = upcast_f16_to_f32(model)?;
        assert_eq!(model.input_fact(0)?.datum_type, f32::datum_type());
        assert_eq!(model.output_fact(0)?.datum_type, f32::datum_type());
        let out = model.into_runnable()?.run(tvec!(tensor1(&[1f32, 2.0, -3.0]).into()))?;
        assert_eq!(out[0].to_plain_array_view::<f32>()?.as_slice().unwrap(), &[1.5, 2.5, -2.5]);
        Ok(())
    }
}

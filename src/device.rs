//! Which compute device a run uses (`--device auto|cpu|cuda`), resolved once at start-up.
//!
//! CUDA exists only in builds with the `cuda` cargo feature (tract-cuda, which loads the CUDA
//! libraries with dlopen at run time, so such a build compiles and starts without CUDA). Asking for
//! `cuda` where it cannot work is a typed error that says what to do; `auto` falls back to the CPU
//! with a log line. This module never panics on missing hardware and never touches a model: how a
//! model runs on the resolved device is `model`'s business.

use std::fmt;
use std::str::FromStr;

/// The device the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// CUDA where this build has it and the machine can use it, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

/// The device a run will use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedDevice {
    Cpu,
    Cuda,
}

impl ResolvedDevice {
    /// The name of the tract runtime for this device (`tract_core::runtime::runtime_for_name`).
    pub fn tract_runtime_name(self) -> &'static str {
        match self {
            ResolvedDevice::Cpu => "cpu",
            ResolvedDevice::Cuda => "cuda",
        }
    }
}

/// Why the requested device cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device `{0}`; expected one of: auto, cpu, cuda")]
    Unknown(String),
    #[error("this build has no CUDA support; rebuild with --features cuda or use --device cpu")]
    NotBuilt,
    #[error(
        "CUDA driver library libcuda.so not found: {detail}; install the NVIDIA driver \
         (JetPack on a Jetson) or use --device cpu"
    )]
    NoDriver { detail: String },
    #[error("CUDA is present but cannot be used: {detail}; use --device cpu")]
    Unusable { detail: String },
}

impl FromStr for Device {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            _ => Err(DeviceError::Unknown(s.to_string())),
        }
    }
}

impl Device {
    pub const ALL: [Device; 3] = [Device::Auto, Device::Cpu, Device::Cuda];

    pub fn name(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for ResolvedDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResolvedDevice::Cpu => "cpu",
            ResolvedDevice::Cuda => "cuda",
        })
    }
}

/// Resolves the requested device against this build and this machine. Call it once; the CUDA
/// probe loads libraries.
pub fn resolve(requested: Device) -> Result<ResolvedDevice, DeviceError> {
    match requested {
        Device::Cpu => Ok(ResolvedDevice::Cpu),
        Device::Cuda => cuda::probe().map(|()| ResolvedDevice::Cuda),
        Device::Auto => match cuda::probe() {
            Ok(()) => {
                log::info!("device: CUDA is usable, running on the GPU");
                Ok(ResolvedDevice::Cuda)
            }
            Err(DeviceError::NotBuilt) => Ok(ResolvedDevice::Cpu),
            Err(err) => {
                log::info!("device: falling back to the CPU: {err}");
                Ok(ResolvedDevice::Cpu)
            }
        },
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use super::DeviceError;

    pub(super) fn probe() -> Result<(), DeviceError> {
        Err(DeviceError::NotBuilt)
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::DeviceError;

    /// The names tract-cuda (through cudarc) tries, in its order.
    const DRIVER_LIBS: [&str; 2] = ["libcuda.so.1", "libcuda.so"];

    /// Whether the CUDA driver library can be loaded, with the loader's reason when it cannot.
    pub(super) fn driver_library() -> Result<(), String> {
        let mut reasons = Vec::new();
        for name in DRIVER_LIBS {
            // SAFETY: loading libcuda runs its initialisers, which have no preconditions; this is
            // the same dlopen tract-cuda does next, done first so a missing driver is told apart
            // from a broken one.
            match unsafe { libloading::Library::new(name) } {
                Ok(_) => return Ok(()),
                // libloading's message is "dlopen failed"; the loader's own words are its source.
                Err(e) => reasons.push(match std::error::Error::source(&e) {
                    Some(why) => why.to_string(),
                    None => e.to_string(),
                }),
            }
        }
        Err(reasons.join("; "))
    }

    pub(super) fn probe() -> Result<(), DeviceError> {
        driver_library().map_err(|detail| DeviceError::NoDriver { detail })?;
        // The driver is there: tract-cuda checks its API version, cuInit, and the libraries it
        // needs besides (cudart, nvrtc, cublas, cudnn), without panicking.
        tract_cuda::utils::ensure_cuda_runtime_dependencies("tract-cuda cannot run here")
            .map_err(|e| DeviceError::Unusable { detail: format!("{e:#}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_round_trip() {
        for d in [Device::Auto, Device::Cpu, Device::Cuda] {
            assert_eq!(d.to_string().parse::<Device>().unwrap(), d);
        }
        assert_eq!("CUDA".parse::<Device>().unwrap(), Device::Cuda);
        let err = "gpu".parse::<Device>().unwrap_err();
        assert_eq!(err.to_string(), "unknown device `gpu`; expected one of: auto, cpu, cuda");
    }

    #[test]
    fn cpu_is_always_available() {
        assert_eq!(resolve(Device::Cpu).unwrap(), ResolvedDevice::Cpu);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_the_feature_cuda_is_an_error_and_auto_is_the_cpu() {
        let err = resolve(Device::Cuda).unwrap_err();
        assert!(matches!(err, DeviceError::NotBuilt));
        assert_eq!(err.to_string(), "this build has no CUDA support; rebuild with --features cuda or use --device cpu");
        assert_eq!(resolve(Device::Auto).unwrap(), ResolvedDevice::Cpu);
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn with_the_feature_but_no_driver_cuda_is_an_error_and_auto_falls_back() {
        if cuda::driver_library().is_ok() {
            // A machine with a driver: whatever resolve says, it must not panic, and auto must
            // agree with an explicit request.
            let explicit = resolve(Device::Cuda);
            let auto = resolve(Device::Auto).unwrap();
            assert_eq!(auto, if explicit.is_ok() { ResolvedDevice::Cuda } else { ResolvedDevice::Cpu });
            eprintln!("CUDA driver present: --device cuda -> {explicit:?}, auto -> {auto}");
            return;
        }
        let err = resolve(Device::Cuda).unwrap_err();
        assert!(matches!(err, DeviceError::NoDriver { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.starts_with("CUDA driver library libcuda.so not found: "), "{msg}");
        assert!(msg.contains("libcuda.so") && msg.ends_with("use --device cpu"), "{msg}");
        eprintln!("--device cuda on this machine: {msg}");
        assert_eq!(resolve(Device::Auto).unwrap(), ResolvedDevice::Cpu);
    }

    #[test]
    fn runtime_names_are_ones_tract_knows() {
        assert!(tract_core::runtime::runtime_for_name(ResolvedDevice::Cpu.tract_runtime_name()).is_ok_and(|r| r.is_some()));
    }
}

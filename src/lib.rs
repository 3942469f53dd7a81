//! dualscale: run adaptive dual-scale diffusion denoisers (ONNX, via tract) and write what they
//! generate to disk. The binary in `main.rs` is a thin shell over this library; `pipeline` is
//! the generation a CLI, a kiosk or a server calls in-process.

pub mod cli;
pub mod commands;
pub mod cpu;
pub mod device;
pub mod eval;
pub mod kiosk;
pub mod manifest;
pub mod model;
pub mod npy;
pub mod output;
pub mod pipeline;
pub mod progress;
pub mod rng;
pub mod sampler;
pub mod schedule;
pub mod signals;

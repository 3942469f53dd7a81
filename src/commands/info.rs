//! `dualscale info`: a model's inputs and outputs, parameters, precision, schedule, sha256 and
//! whether it verified; or, with `--system`, what the CPU offers. Reads only; writes nothing.

use serde_json::json;

use crate::cli::{InfoArgs, ModelChoice};
use crate::model::LoadOptions;

pub fn run(args: &InfoArgs) -> anyhow::Result<()> {
    if args.system {
        let cpu = crate::cpu::detect();
        // Whether `--device cuda` (and so `auto`) can use CUDA here, and why not when it cannot.
        let cuda = match crate::device::resolve(crate::device::Device::Cuda) {
            Ok(_) => "usable".to_string(),
            Err(e) => format!("not usable: {e}"),
        };
        if args.json {
            println!(
                "{}",
                json!({"arch": cpu.arch, "model_name": cpu.model_name, "features": cpu.features,
                       "native_f16": cpu.native_f16, "dot_product": cpu.dot_product, "cuda": cuda})
            );
        } else {
            println!("{cpu}");
            println!("cuda: {cuda}");
        }
        return Ok(());
    }
    let choice = ModelChoice {
        path: args.model.clone(),
        load: LoadOptions { allow_unverified: args.allow_unverified, ..LoadOptions::default() },
    };
    let model = super::load_model(&choice)?;
    let info = model.info();
    let config = model.config();
    let s = &config.schedule;
    let io = |list: &[crate::model::IoInfo]| {
        list.iter().map(|i| json!({"name": i.name, "dtype": format!("{:?}", i.dtype).to_lowercase(), "shape": i.shape_string()})).collect::<Vec<_>>()
    };
    let abar_end = crate::schedule::NoiseSchedule::new(s).ok().and_then(|n| n.alphas_cumprod().last().copied());
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "name": info.name, "path": info.path.as_ref().map(|p| p.display().to_string()),
                "kind": info.kind.name(), "inputs": io(&info.inputs), "outputs": io(&info.outputs),
                "parameters": info.parameters, "precision": info.precision, "compute": format!("{:?}", model.compute_dtype()),
                "device": model.device().to_string(),
                "sha256": info.sha256, "verified": info.verification == crate::model::Verification::Verified,
                "verification": info.verification.to_string(), "external_data": info.external_data, "gate": info.has_gate,
                "file_bytes": info.file_bytes, "config_source": config.source.to_string(),
                "schedule": {"num_train_timesteps": s.num_train_timesteps, "beta_start": s.beta_start, "beta_end": s.beta_end,
                             "beta_schedule": s.beta_schedule.to_string(), "prediction_type": s.prediction_type.to_string(),
                             "timestep_spacing": s.timestep_spacing.to_string(), "steps_offset": s.steps_offset,
                             "abar_end": abar_end},
                "data_stats": config.data_stats().map(|d| json!({"mean": d.mean, "cov": d.cov})),
            }))?
        );
        return Ok(());
    }
    println!("model       {}", info.name);
    if let Some(p) = &info.path {
        println!("file        {} ({} bytes{})", p.display(), info.file_bytes, if info.external_data { ", weights in external data" } else { "" });
    } else {
        println!("file        embedded in the binary ({} bytes)", info.file_bytes);
    }
    println!("kind        {}", info.kind.name());
    for i in &info.inputs {
        println!("input       {} {} {:?}", i.name, i.shape_string(), i.dtype);
    }
    for o in &info.outputs {
        println!("output      {} {} {:?}", o.name, o.shape_string(), o.dtype);
    }
    println!("parameters  {}", info.parameters);
    println!("precision   {} (computed in {:?})", info.precision, model.compute_dtype());
    println!("device      {}", model.device());
    println!("gate        {}", if info.has_gate { "yes (global, local weights per step)" } else { "no" });
    println!("sha256      {}", info.sha256);
    println!("verified    {}", info.verification);
    println!("config      {}", config.source);
    println!(
        "schedule    {} T={} beta {}..{}, {}, spacing {}, offset {}{}",
        s.beta_schedule,
        s.num_train_timesteps,
        s.beta_start,
        s.beta_end,
        s.prediction_type,
        s.timestep_spacing,
        s.steps_offset,
        abar_end.map(|a| format!(", abar at T = {a:.4}")).unwrap_or_default()
    );
    if let Some(d) = config.data_stats() {
        println!("data stats  mean {:?} cov {:?}", d.mean, d.cov);
    }
    Ok(())
}

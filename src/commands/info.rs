//! `dualscale info`: a model's inputs and outputs, parameters, precision, schedule, sha256 and
//! whether it verified; or, with `--system`, what the CPU offers. Reads only; writes nothing.

use serde_json::json;

use super::Out;
use crate::cli::InfoConfig;
use crate::pipeline::{ModelRecipe, ScheduleRecipe};

pub fn run(cfg: &InfoConfig) -> anyhow::Result<()> {
    let out = Out::stdout();
    let (choice, json) = match cfg {
        InfoConfig::System { json } => return system(*json),
        InfoConfig::Model { model, json } => (model, *json),
    };
    let model = super::load_model(choice)?;
    let info = model.info();
    let config = model.config();
    let s = &config.schedule;
    let io = |list: &[crate::model::IoInfo]| {
        list.iter()
            .map(|i| json!({"name": i.name, "dtype": format!("{:?}", i.dtype).to_lowercase(), "shape": i.shape_string()}))
            .collect::<Vec<_>>()
    };
    let recommended = config.manifest.as_ref().and_then(|m| m.sampler.as_ref());
    let abar_end = crate::schedule::NoiseSchedule::new(s).ok().and_then(|n| n.alphas_cumprod().last().copied());
    if json {
        let schedule = ScheduleRecipe { abar_end, ..ScheduleRecipe::new(s) };
        return out.line(serde_json::to_string_pretty(&json!({
            "name": info.name, "path": info.path.as_ref().map(|p| p.display().to_string()),
            "kind": info.kind.name(), "inputs": io(&info.inputs), "outputs": io(&info.outputs),
            "parameters": info.parameters, "precision": info.precision, "integer_products": info.integer_products, "compute": format!("{:?}", model.compute_dtype()),
            "device": model.device().to_string(),
            "sha256": info.sha256, "verified": info.verification == crate::model::Verification::Verified,
            "verification": info.verification.to_string(), "external_data": info.external_data, "gate": info.has_gate,
            "file_bytes": info.file_bytes, "config_source": config.source.to_string(),
            "model": ModelRecipe::new(info),
            "schedule": schedule,
            "data_stats": config.data_stats().map(|d| json!({"mean": d.mean, "cov": d.cov, "var": d.var})),
            "sampler": recommended.map(|r| json!({"type": r.kind.name(), "timesteps": r.timesteps, "steps": r.steps()})),
        }))?);
    }
    out.line(format_args!("model       {}", info.name))?;
    if let Some(p) = &info.path {
        out.line(format_args!(
            "file        {} ({} bytes{})",
            p.display(),
            info.file_bytes,
            if info.external_data { ", weights in external data" } else { "" }
        ))?;
    } else {
        out.line(format_args!("file        embedded in the binary ({} bytes)", info.file_bytes))?;
    }
    out.line(format_args!("kind        {}", info.kind.name()))?;
    for i in &info.inputs {
        out.line(format_args!("input       {} {} {:?}", i.name, i.shape_string(), i.dtype))?;
    }
    for o in &info.outputs {
        out.line(format_args!("output      {} {} {:?}", o.name, o.shape_string(), o.dtype))?;
    }
    out.line(format_args!("parameters  {}", info.parameters))?;
    if info.precision == "int8" && info.integer_products {
        out.line(format_args!("precision   int8 (integer matrix products, the rest in {:?})", model.compute_dtype()))?;
    } else if info.precision == "int8" {
        out.line(format_args!("precision   int8 (int8 weights, dequantized at load; computed in {:?})", model.compute_dtype()))?;
    } else {
        out.line(format_args!("precision   {} (computed in {:?})", info.precision, model.compute_dtype()))?;
    }
    out.line(format_args!("device      {}", model.device()))?;
    out.line(format_args!("gate        {}", if info.has_gate { "yes (global, local weights per step)" } else { "no" }))?;
    out.line(format_args!("sha256      {}", info.sha256))?;
    out.line(format_args!("verified    {}", info.verification))?;
    out.line(format_args!("config      {}", config.source))?;
    out.line(format_args!(
        "schedule    {} T={} beta {}..{}, {}, spacing {}, offset {}{}",
        s.beta_schedule,
        s.num_train_timesteps,
        s.beta_start,
        s.beta_end,
        s.prediction_type,
        s.timestep_spacing,
        s.steps_offset,
        abar_end.map(|a| format!(", abar at T = {a:.4}")).unwrap_or_default()
    ))?;
    if let Some(r) = recommended {
        let list = r.timesteps.as_ref().map(|l| format!(", timesteps {l:?}")).unwrap_or_default();
        out.line(format_args!(
            "sampler     {} with {} steps{list} (the default; --sampler/--steps/--timesteps change it)",
            r.kind,
            r.steps().unwrap_or(0)
        ))?;
    }
    if let Some(d) = config.data_stats() {
        out.line(format_args!("data stats  mean {:?} cov {:?} var {:?}", d.mean, d.cov, d.var))?;
    }
    Ok(())
}

/// `info --system`: the CPU's features and whether CUDA is usable.
fn system(json: bool) -> anyhow::Result<()> {
    let out = Out::stdout();
    {
        let cpu = crate::cpu::detect();
        // Whether `--device cuda` (and so `auto`) can use CUDA here, and why not when it cannot.
        let cuda = match crate::device::resolve(crate::device::Device::Cuda) {
            Ok(_) => "usable".to_string(),
            Err(e) => format!("not usable: {e}"),
        };
        if json {
            out.line(json!({"arch": cpu.arch, "model_name": cpu.model_name, "features": cpu.features,
                            "native_f16": cpu.native_f16, "dot_product": cpu.dot_product, "cuda": cuda}))?;
        } else {
            out.line(&cpu)?;
            out.line(format_args!("cuda: {cuda}"))?;
        }
    }
    Ok(())
}

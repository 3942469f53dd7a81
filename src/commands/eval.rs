//! `dualscale eval`: the KL estimator of the reference (k-NN, max norm, bits) between generated
//! points and a reference data set. Reads files, prints one number; writes nothing.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

use super::Out;
use crate::cli::{EvalConfig, UsageError};

pub fn run(args: &EvalConfig) -> anyhow::Result<()> {
    let (samples, dim) = read_points(&args.samples)?;
    let reference_path = resolve_reference(&args.reference)?;
    let (data, data_dim) = read_points(&reference_path)?;
    if dim != data_dim {
        anyhow::bail!(
            "{} has {dim}-D points but the reference {} has {data_dim}-D points; compare outputs of the same kind",
            args.samples.display(),
            reference_path.display()
        );
    }
    let kl = crate::eval::kl_divergence_bits(&data, &samples, dim, args.k.get())?;
    if args.json {
        Out::stdout().line(json!({"kl_bits": kl, "k": args.k, "n_data": data.len() / dim, "m_samples": samples.len() / dim,
                                  "reference": reference_path.display().to_string(), "samples": args.samples.display().to_string()}))?;
    } else {
        Out::stdout().line(format_args!("{kl:.6}"))?;
    }
    Ok(())
}

/// A data set name (circle, dino, line, moons) or a path. Names are looked up, in order: in
/// `$DUALSCALE_DATA` (a folder of `NAME.npy`), in `models/data/` of the current directory, then
/// beside the binary: `models/data/` in its folder or up to three folders above it (a build in
/// a checkout: `target/release/`), and `share/dualscale/models/data/` above it (installed), and
/// finally `/usr/share/dualscale/models/data/` (the Debian package).
fn resolve_reference(name: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(name);
    if path.extension().is_some() || name.contains('/') {
        return Ok(path.to_owned());
    }
    let file = format!("{name}.npy");
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("DUALSCALE_DATA") {
        candidates.push(PathBuf::from(dir).join(&file));
    }
    candidates.push(Path::new("models/data").join(&file));
    if let Some(exe_dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_owned)) {
        for dir in exe_dir.ancestors().take(4) {
            candidates.push(dir.join("models/data").join(&file));
            candidates.push(dir.join("share/dualscale/models/data").join(&file));
        }
    }
    candidates.push(Path::new("/usr/share/dualscale/models/data").join(&file));
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        UsageError(format!(
            "reference `{name}` is neither a file nor a shipped data set (looked in $DUALSCALE_DATA, models/data/ here and beside the binary, and /usr/share/dualscale/models/data/); pass --reference PATH.npy or set DUALSCALE_DATA"
        ))
        .into()
    })
}

/// Points from `.npy` (`[M, D]`) or `.csv` (header line, then comma-separated numbers).
fn read_points(path: &Path) -> anyhow::Result<(Vec<f32>, usize)> {
    let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if !is_csv {
        let (shape, data) = crate::npy::read_f32_file(path).with_context(|| format!("reading {}", path.display()))?;
        if shape.len() != 2 || shape[1] == 0 {
            anyhow::bail!("{} has shape {shape:?}; expected points [M, D]", path.display());
        }
        return Ok((data, shape[1]));
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut data = Vec::new();
    let mut dim = 0;
    for (line_no, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let row = line
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("{} line {}: {e}; expected numbers separated by commas", path.display(), line_no + 1))?;
        if dim == 0 {
            dim = row.len();
        } else if row.len() != dim {
            anyhow::bail!("{} line {}: {} values, expected {dim}", path.display(), line_no + 1, row.len());
        }
        data.extend(row);
    }
    if dim == 0 {
        anyhow::bail!("{} has no points", path.display());
    }
    Ok((data, dim))
}

//! Integration tests of the real `dualscale` binary on real committed models: the main job,
//! outputs, determinism, and every bad input of issue #3 (one-line error, documented exit
//! code, no partial file, never a panic).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use prost::Message;
use tract_onnx::pb;

mod common;

use common::{command, repo};
use dualscale::model::EMBEDDED_NAME;

fn dualscale(args: &[&str]) -> Output {
    command().args(args).env("NO_COLOR", "1").env_remove("RUST_LOG").output().expect("run dualscale")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failure: the given exit code, exactly one `error:` line, no panic.
fn assert_fails(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// The dual-scale dino model, for the tests that need a point model whatever the default is.
const DINO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/dino-dualscale.onnx");

fn dino_model() -> PathBuf {
    repo().join("models/dino-dualscale.onnx")
}

/// Copies the dino model (and optionally its manifest text) into a fresh directory.
fn model_copy(manifest: Option<&str>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dino-dualscale.onnx");
    std::fs::copy(dino_model(), &path).unwrap();
    if let Some(text) = manifest {
        std::fs::write(dir.path().join("dino-dualscale.json"), text).unwrap();
    }
    (dir, path)
}

fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    dualscale::npy::read_f32_file(path).unwrap()
}

#[test]
fn generate_with_no_model_writes_a_landscape_png_from_the_embedded_model() {
    let out = tempfile::tempdir().unwrap();
    let o = dualscale(&["generate", "--out", out.path().to_str().unwrap(), "--steps", "4"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(EMBEDDED_NAME.starts_with("landscape-dualscale"), "the embedded default is the landscape model");
    let stem = format!("{EMBEDDED_NAME}-s0-0");
    assert_eq!(files_in(out.path()), [format!("{stem}.json"), format!("{stem}.png")]);
    let img = image::open(out.path().join(format!("{stem}.png"))).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (32, 32));
    // A picture, not noise or a flat field: a sky above, darker ground below, some contrast.
    let luma = |y: u32| (0..32).map(|x| img.get_pixel(x, y).0.iter().map(|&c| c as f64).sum::<f64>()).sum::<f64>() / 96.0;
    let (top, bottom) = ((0..8).map(luma).sum::<f64>() / 8.0, (24..32).map(luma).sum::<f64>() / 8.0);
    assert!((top - bottom).abs() > 5.0 || top > 20.0, "top {top} bottom {bottom}");
    let sidecar: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path().join(format!("{stem}.json"))).unwrap()).unwrap();
    assert_eq!(sidecar["model"]["verification"], "verified against the manifest");
    assert_eq!(sidecar["gate_weights"].as_array().unwrap().len(), 4);
}

#[test]
fn generate_writes_points_csv_npy_png_json_from_the_dino_model() {
    let out = tempfile::tempdir().unwrap();
    let o = dualscale(&["generate", "--model", DINO, "--out", out.path().to_str().unwrap(), "--count", "600", "--steps", "10"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let files = files_in(out.path());
    assert_eq!(files, ["dino-dualscale-s0-0.csv", "dino-dualscale-s0-0.json", "dino-dualscale-s0-0.npy", "dino-dualscale-s0-0.png"]);
    // stdout lists the paths written
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 4);
    let (shape, data) = read_npy(&out.path().join("dino-dualscale-s0-0.npy"));
    assert_eq!(shape, vec![600, 2]);
    assert!(data.iter().all(|v| v.is_finite()));
    // the dino data lives in roughly [-4, 4]^2; samples from a trained model must too
    let inside = data.chunks(2).filter(|p| p[0].abs() < 5.0 && p[1].abs() < 5.0).count();
    assert!(inside > 570, "only {inside} of 600 points in the data's box");
    let csv = std::fs::read_to_string(out.path().join("dino-dualscale-s0-0.csv")).unwrap();
    assert_eq!(csv.lines().next(), Some("x,y"));
    assert_eq!(csv.lines().count(), 601);
    let png = image::open(out.path().join("dino-dualscale-s0-0.png")).unwrap();
    assert!(png.width() >= 200);
    let sidecar: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path().join("dino-dualscale-s0-0.json")).unwrap()).unwrap();
    assert_eq!(sidecar["sampler"], "unipc");
    assert_eq!(sidecar["steps"], 10);
    assert_eq!(sidecar["init"], "data");
    let gates = sidecar["gate_weights"].as_array().unwrap();
    assert_eq!(gates.len(), 10, "one gate record per step");
    for g in gates {
        let (gl, lo) = (g["global"].as_f64().unwrap(), g["local"].as_f64().unwrap());
        assert!((gl + lo - 1.0).abs() < 1e-4, "gate weights sum to one: {g}");
    }
    assert_eq!(sidecar["model"]["verification"], "verified against the manifest");
}

#[test]
fn same_seed_same_points_and_batching_does_not_change_them() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let args = ["generate", "--model", DINO, "--count", "240", "--steps", "8", "--sampler", "ddpm", "--seed", "7"];
    for (dir, extra) in [(&a, vec![]), (&b, vec![]), (&c, vec!["--batch", "100"])] {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--out", dir.path().to_str().unwrap()]);
        all.extend(extra);
        let o = dualscale(&all);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let name = "dino-dualscale-s7-0.npy";
    let (_, pa) = read_npy(&a.path().join(name));
    let (_, pb) = read_npy(&b.path().join(name));
    let (_, pc) = read_npy(&c.path().join(name));
    assert_eq!(pa, pb, "same seed, same bits");
    let max = pa.iter().zip(&pc).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(max < 1e-4, "batch 100 vs 240 differ by {max}");
    let other = tempfile::tempdir().unwrap();
    let o = dualscale(&[
        "generate",
        "--model",
        DINO,
        "--count",
        "240",
        "--steps",
        "8",
        "--sampler",
        "ddpm",
        "--seed",
        "8",
        "--out",
        other.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let (_, pd) = read_npy(&other.path().join("dino-dualscale-s8-0.npy"));
    assert_ne!(pa, pd, "another seed, other points");
}

#[test]
fn every_sampler_runs_on_the_real_model() {
    for sampler in ["ddpm", "ddim", "euler", "heun", "dpmpp-2m", "dpmpp-3m", "unipc", "adaptive"] {
        let out = tempfile::tempdir().unwrap();
        let o = dualscale(&[
            "generate",
            "--model",
            DINO,
            "--sampler",
            sampler,
            "--steps",
            "6",
            "--count",
            "100",
            "--json",
            "--out",
            out.path().to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{sampler}: {}", stderr(&o));
        let events: Vec<serde_json::Value> =
            String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
        assert_eq!(events.first().unwrap()["event"], "start", "{sampler}");
        assert_eq!(events.last().unwrap()["event"], "done", "{sampler}");
        let steps = events.iter().filter(|e| e["event"] == "step").count();
        assert!(steps >= 1, "{sampler}: no step events");
        assert!(events.iter().filter(|e| e["event"] == "step").all(|e| e["gate"]["global"].is_number()), "{sampler}: gate in events");
        assert_eq!(events.iter().filter(|e| e["event"] == "file").count(), 4, "{sampler}");
    }
}

#[test]
fn time_budget_reports_its_choice() {
    let out = tempfile::tempdir().unwrap();
    // A budget of ~20 evaluations on this machine (qemu is ~250x slower than a native core).
    let bench = dualscale(&["bench", "--model", DINO, "--batch", "500", "--iters", "1", "--json"]);
    let bench: serde_json::Value = serde_json::from_slice(&bench.stdout).unwrap();
    let budget_s = (bench["median_ms"].as_f64().unwrap() * 20.0 / 1e3).max(1.0);
    let budget = format!("{budget_s:.3}s");
    let args = ["generate", "--model", DINO, "--time-budget", &budget, "--count", "500", "--json", "--out", out.path().to_str().unwrap()];
    let o = dualscale(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let b: serde_json::Value = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "budget")
        .expect("budget event");
    let (spent, eval_ms, steps) = (b["spent_s"].as_f64().unwrap(), b["eval_ms"].as_f64().unwrap(), b["steps"].as_f64().unwrap());
    assert!(steps >= 1.0 && eval_ms > 0.0 && spent > 0.0, "{b}");
    // Loading and timing count: what was already spent is taken off before the steps are fitted
    // (once, `--time-budget 1s` took 1.64 s).
    assert!(steps * eval_ms / 1e3 <= (budget_s - spent) * 0.9 + 1e-9 || steps == 1.0, "{b}");
    let empty = tempfile::tempdir().unwrap();
    let o = dualscale(&["generate", "--model", DINO, "--time-budget", "1ms", "--count", "2000", "--out", empty.path().to_str().unwrap()]);
    assert_fails(&o, 1, "too small");
    assert!(files_in(empty.path()).is_empty());
}

#[test]
fn init_noise_file_drives_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let noise: Vec<f32> = (0..200).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let npy = dir.path().join("noise.npy");
    std::fs::write(&npy, dualscale::npy::to_bytes_f32(&[100, 2], &noise)).unwrap();
    let mut outs = Vec::new();
    for seed in ["1", "2"] {
        let out = tempfile::tempdir().unwrap();
        let o = dualscale(&[
            "generate",
            "--model",
            DINO,
            "--init-noise",
            npy.to_str().unwrap(),
            "--count",
            "100",
            "--steps",
            "5",
            "--seed",
            seed,
            "--name",
            "x",
            "--out",
            out.path().to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        outs.push(read_npy(&out.path().join("x.npy")).1);
    }
    assert_eq!(outs[0], outs[1], "deterministic sampler from the same noise file ignores the seed");
    let out = tempfile::tempdir().unwrap();
    let o = dualscale(&[
        "generate",
        "--model",
        DINO,
        "--init-noise",
        npy.to_str().unwrap(),
        "--count",
        "50",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_fails(&o, 2, "--init-noise");
    assert!(files_in(out.path()).is_empty());
}

#[test]
fn diffusers_unet_with_scheduler_config_generates_an_image() {
    for fixture in ["unet", "unet-external"] {
        let out = tempfile::tempdir().unwrap();
        let model = repo().join("tests/fixtures").join(fixture).join("model.onnx");
        let o = dualscale(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--steps",
            "3",
            "--sampler",
            "ddim",
            "--count",
            "2",
            "--name",
            "img-{index}",
            "--out",
            out.path().to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{fixture}: {}", stderr(&o));
        assert_eq!(files_in(out.path()), ["img-0.json", "img-0.png", "img-1.json", "img-1.png"], "{fixture}");
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(out.path().join("img-0.png")).unwrap()));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        let text = info.uncompressed_latin1_text.iter().find(|t| t.keyword == "parameters").expect("parameters chunk");
        assert!(text.text.contains("Sampler: ddim") && text.text.contains("Seed: 0"), "{}", text.text);
        assert_eq!((info.width, info.height), (16, 16));
    }
}

#[test]
fn info_shows_the_embedded_model_verified() {
    let o = dualscale(&["info", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["name"], EMBEDDED_NAME);
    assert_eq!(v["kind"], "image");
    assert_eq!(v["verified"], true);
    assert_eq!(v["gate"], true);
    assert_eq!(v["schedule"]["num_train_timesteps"], 1000);
    assert_eq!(v["schedule"]["beta_schedule"], "squaredcos_cap_v2");
    assert!(v["parameters"].as_u64().unwrap() > 100_000);
    let o = dualscale(&["info", "--system"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn eval_scores_generated_points_against_the_dataset() {
    // The estimator through the binary on the recipe's fixture: Python's value, to rounding.
    let fixture = repo().join("tests/fixtures/kl");
    let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture.join("expected.json")).unwrap()).unwrap();
    let o = dualscale(&["eval", fixture.join("samples.npy").to_str().unwrap(), "--reference", fixture.join("data.npy").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let kl: f64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert!((kl - expected["kl_bits"].as_f64().unwrap()).abs() < 1e-6, "{kl} vs {expected}");

    // Fresh samples, scored as .npy and as .csv against a shipped data set by name.
    let out = tempfile::tempdir().unwrap();
    let o = dualscale(&["generate", "--model", DINO, "--count", "500", "--steps", "10", "--out", out.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let reference = repo().join("models/data/dino.npy");
    let score = |file: &str| -> f64 {
        let o = dualscale(&["eval", out.path().join(file).to_str().unwrap(), "--reference", reference.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    let kl = score("dino-dualscale-s0-0.npy");
    // 500 samples of the trained model, 10 steps: 4.7 bits on x86_64 (the estimator's
    // small-sample bias included); 500 N(0, I) points score 8.3, so this fails for a broken
    // sampler or model.
    assert!(kl.is_finite() && kl < 6.0, "KL of the trained dino model is {kl} bits");
    assert!((kl - score("dino-dualscale-s0-0.csv")).abs() < 1e-6);
}

/// Every shipped model loads, verifies against its manifest, and generates.
#[test]
fn every_shipped_model_loads_verifies_and_generates() {
    let mut models: Vec<PathBuf> = std::fs::read_dir(repo().join("models"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    models.sort();
    assert!(models.len() >= 20, "{models:?}");
    let out = tempfile::tempdir().unwrap();
    for model in &models {
        let m = model.to_str().unwrap();
        // One generate per model (the sidecar says how it verified): a 3-step run of one image
        // (a 32x32 picture costs what ~2,000 points do) or 32 points.
        let stem = model.file_stem().unwrap().to_str().unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(model.with_extension("json")).unwrap()).unwrap();
        let image = manifest["kind"] == "image";
        let o = dualscale(&[
            "generate",
            "--model",
            m,
            "--count",
            if image { "1" } else { "32" },
            "--steps",
            "3",
            "--name",
            "{model}",
            "--out",
            out.path().to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{m}: {}", stderr(&o));
        let name = manifest["name"].as_str().unwrap();
        assert_eq!(name, stem, "{m}: the manifest's name is not the file's");
        let sidecar: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path().join(format!("{name}.json"))).unwrap()).unwrap();
        assert_eq!(sidecar["model"]["verification"], "verified against the manifest", "{m}");
        if image {
            let img = image::open(out.path().join(format!("{name}.png"))).unwrap();
            assert_eq!(img.width(), 32, "{m}");
            continue;
        }
        let (shape, data) = read_npy(&out.path().join(format!("{name}.npy")));
        assert_eq!(shape, vec![32, 2], "{m}");
        assert!(data.iter().all(|v| v.is_finite()), "{m}");
    }
}

// ---- bad input: one line, an exit code, no partial file, no panic ----

fn generate_with_model(model: &Path, out: &Path) -> Output {
    dualscale(&["generate", "--model", model.to_str().unwrap(), "--count", "100", "--steps", "3", "--out", out.to_str().unwrap()])
}

#[test]
fn missing_and_unreadable_models() {
    let out = tempfile::tempdir().unwrap();
    assert_fails(&generate_with_model(Path::new("/nonexistent/model.onnx"), out.path()), 1, "not found");
    assert_fails(&generate_with_model(out.path(), out.path()), 1, "directory");
    assert!(files_in(out.path()).is_empty());
}

#[test]
fn bytes_that_are_not_onnx_and_truncated_onnx() {
    let out = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"this is a text file, not a model\n").unwrap();
    assert_fails(&generate_with_model(&junk, out.path()), 1, "not an ONNX model");
    let bytes = std::fs::read(dino_model()).unwrap();
    for cut in [bytes.len() / 2, bytes.len() - 7, 100] {
        let truncated = dir.path().join("truncated.onnx");
        std::fs::write(&truncated, &bytes[..cut]).unwrap();
        let o = generate_with_model(&truncated, out.path());
        assert_eq!(o.status.code(), Some(1), "cut {cut}: {}", stderr(&o));
        assert_fails(&o, 1, "truncated.onnx");
    }
    assert!(files_in(out.path()).is_empty());
}

/// A small ONNX graph built by hand: inputs x [N,2] (or as given) and t [N], one node.
fn tiny_model(inputs: &[(&str, &[i64])], op: &str, out_name: &str) -> Vec<u8> {
    let value = |name: &str, dims: &[i64]| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| pb::tensor_shape_proto::Dimension {
                            value: Some(if d < 0 {
                                pb::tensor_shape_proto::dimension::Value::DimParam("N".into())
                            } else {
                                pb::tensor_shape_proto::dimension::Value::DimValue(d)
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let x = inputs[0].0;
    let node = pb::NodeProto { op_type: op.into(), input: vec![x.into(), x.into()], output: vec![out_name.into()], ..Default::default() };
    let zero = pb::NodeProto { op_type: "Sub".into(), input: vec![x.into(), x.into()], output: vec!["zero".into()], ..Default::default() };
    let nan = pb::NodeProto {
        op_type: "Div".into(),
        input: vec!["zero".into(), "zero".into()],
        output: vec![out_name.into()],
        ..Default::default()
    };
    let nodes = if op == "NaN" { vec![zero, nan] } else { vec![node] };
    let graph = pb::GraphProto {
        name: "tiny".into(),
        node: nodes,
        input: inputs.iter().map(|(n, d)| value(n, d)).collect(),
        output: vec![value(out_name, inputs[0].1)],
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(graph),
        ..Default::default()
    };
    model.encode_to_vec()
}

#[test]
fn models_whose_inputs_fit_no_kind() {
    let out = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let three = dir.path().join("three.onnx");
    std::fs::write(&three, tiny_model(&[("x", &[-1, 2]), ("t", &[-1]), ("cond", &[-1, 4])], "Add", "eps")).unwrap();
    assert_fails(&generate_with_model(&three, out.path()), 1, "has 3 inputs");
    let rank3 = dir.path().join("rank3.onnx");
    std::fs::write(&rank3, tiny_model(&[("x", &[-1, 2, 5]), ("t", &[-1])], "Add", "eps")).unwrap();
    assert_fails(&generate_with_model(&rank3, out.path()), 1, "[N,D] point models");
    assert!(files_in(out.path()).is_empty());
}

#[test]
fn nan_from_the_model_stops_and_names_the_step() {
    let out = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.onnx");
    std::fs::write(&path, tiny_model(&[("x", &[-1, 2]), ("t", &[-1])], "NaN", "eps")).unwrap();
    let o = generate_with_model(&path, out.path());
    assert_fails(&o, 1, "NaN or Inf at step 0");
    assert!(files_in(out.path()).is_empty());
}

#[test]
fn manifest_invalid_json_missing_keys_wrong_sha() {
    let out = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(repo().join("models/dino-dualscale.json")).unwrap();
    let (_d, p) = model_copy(Some("{ \"name\": "));
    assert_fails(&generate_with_model(&p, out.path()), 1, "not valid JSON");
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v.as_object_mut().unwrap().remove("scheduler");
    let (_d, p) = model_copy(Some(&v.to_string()));
    assert_fails(&generate_with_model(&p, out.path()), 1, "lacks required key `scheduler`");
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["sha256"] = serde_json::Value::String("0".repeat(64));
    let (_d, p) = model_copy(Some(&v.to_string()));
    assert_fails(&generate_with_model(&p, out.path()), 1, "--allow-unverified");
    assert!(files_in(out.path()).is_empty());
    // and the escape hatch works
    let o = dualscale(&[
        "generate",
        "--model",
        p.to_str().unwrap(),
        "--allow-unverified",
        "--count",
        "50",
        "--steps",
        "2",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn bad_step_counts_and_unknown_sampler_are_usage_errors() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    assert_fails(&dualscale(&["generate", "--model", DINO, "--steps", "0", "--out", o]), 2, "--steps");
    assert_fails(&dualscale(&["generate", "--model", DINO, "--steps", "101", "--out", o]), 2, "100 training timesteps");
    assert_fails(&dualscale(&["generate", "--model", DINO, "--sampler", "plms", "--out", o]), 2, "--sampler");
    let bad_flag = dualscale(&["generate", "--model", DINO, "--no-such-flag"]);
    assert_eq!(bad_flag.status.code(), Some(2));
    assert!(files_in(out.path()).is_empty());
}

#[test]
fn output_directory_is_created_but_never_over_a_file() {
    let dir = tempfile::tempdir().unwrap();
    // mkdir -p semantics: a missing directory and its parents are created.
    let nested = dir.path().join("a/b/c");
    let o = dualscale(&["generate", "--model", DINO, "--count", "10", "--steps", "2", "--out", nested.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(files_in(&nested).len(), 4);
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let o = dualscale(&["generate", "--model", DINO, "--count", "10", "--out", file.to_str().unwrap()]);
    assert_fails(&o, 1, "not a directory");
    let o = dualscale(&["generate", "--model", DINO, "--count", "10", "--out", file.join("sub").to_str().unwrap()]);
    assert_fails(&o, 1, "cannot create output directory");
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    // /proc/self is a directory no one may create files in, root included
    let o = dualscale(&["generate", "--model", DINO, "--count", "10", "--steps", "2", "--out", "/proc/self"]);
    assert_fails(&o, 1, "/proc/self");
}

#[test]
fn existing_files_are_not_overwritten_without_the_flag() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let first = dualscale(&["generate", "--model", DINO, "--count", "50", "--steps", "2", "--out", o]);
    assert_eq!(first.status.code(), Some(0));
    let before = std::fs::read(out.path().join("dino-dualscale-s0-0.npy")).unwrap();
    assert_fails(&dualscale(&["generate", "--model", DINO, "--count", "60", "--steps", "2", "--out", o]), 1, "--overwrite");
    assert_eq!(std::fs::read(out.path().join("dino-dualscale-s0-0.npy")).unwrap(), before);
    let again = dualscale(&["generate", "--model", DINO, "--count", "60", "--steps", "2", "--overwrite", "--out", o]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(read_npy(&out.path().join("dino-dualscale-s0-0.npy")).0, vec![60, 2]);
}

#[test]
fn interrupted_run_exits_130_and_writes_nothing() {
    use std::io::BufRead;
    let out = tempfile::tempdir().unwrap();
    // Many small steps (100 batches of 40 points, 100 ddpm steps each): long enough to be
    // interrupted mid-run, short steps so the run stops soon after the signal, also under qemu.
    let mut child = command()
        .args(["generate", "--model", DINO, "--sampler", "ddpm", "--count", "4000", "--batch", "40", "--json"])
        .args(["--out", out.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Signal once sampling has begun (the first step event), not after a guessed delay.
    let mut events = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first_step = events.by_ref().map(|l| l.unwrap()).find(|l| l.contains(r#""event":"step""#));
    assert!(first_step.is_some(), "no step event before the run ended");
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let rest: Vec<String> = events.map(|l| l.unwrap()).collect();
    let o = child.wait_with_output().unwrap();
    assert_fails(&o, 130, "interrupted");
    // The message names the step and the batch (once always `step 0` in batched runs).
    assert!(stderr(&o).contains("(batch "), "{}", stderr(&o));
    assert!(!rest.iter().any(|l| l.contains(r#""event":"done""#)), "the run finished anyway");
    assert!(files_in(out.path()).is_empty(), "{:?}", files_in(out.path()));
}

/// `--device`: `cuda` where this build or machine cannot use it is a clear failure, `auto` runs
/// on the CPU and says so. (On this project's CI there is no GPU; `cross/ci.sh` runs this test in
/// a build with the `cuda` feature too.)
#[test]
fn device_cuda_without_cuda_fails_clearly_and_auto_falls_back_to_the_cpu() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    assert_fails(&dualscale(&["generate", "--model", DINO, "--device", "gpu", "--out", o]), 2, "'gpu' for '--device");
    let cuda = dualscale(&["generate", "--model", DINO, "--device", "cuda", "--count", "50", "--steps", "2", "--out", o]);
    if cuda.status.code() == Some(0) {
        eprintln!("this machine runs CUDA; the no-CUDA half of this test does not apply");
        return;
    }
    let needle = if cfg!(feature = "cuda") { "use --device cpu" } else { "this build has no CUDA support" };
    assert_fails(&cuda, 1, needle);
    assert!(files_in(out.path()).is_empty(), "{:?}", files_in(out.path()));

    let auto = command()
        .args(["generate", "--model", DINO, "--device", "auto", "--count", "50", "--steps", "2", "--out", o])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(auto.status.code(), Some(0), "{}", stderr(&auto));
    assert_eq!(files_in(out.path()).len(), 4, "{:?}", files_in(out.path()));
    if cfg!(feature = "cuda") {
        assert!(stderr(&auto).contains("device: falling back to the CPU"), "{}", stderr(&auto));
    }
    let info = dualscale(&["info", "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["device"], "cpu");
}

#[test]
fn bench_times_batches_and_names_the_slowest_nodes() {
    let o = dualscale(&["bench", "--model", DINO, "--batch", "1,64", "--iters", "2", "--nodes", "3", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.iter().map(|r| r["batch"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 64]);
    for row in &rows {
        assert!(row["median_ms"].as_f64().unwrap() > 0.0, "{row}");
        let nodes = row["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3, "{row}");
        let ms: Vec<f64> = nodes.iter().map(|n| n["ms"].as_f64().unwrap()).collect();
        assert!(ms.windows(2).all(|w| w[0] >= w[1]) && ms[2] > 0.0, "slowest first: {ms:?}");
        assert!(nodes.iter().all(|n| !n["name"].as_str().unwrap().is_empty()), "{row}");
    }
    assert_fails(&dualscale(&["bench", "--model", DINO, "--batch", "0"]), 2, "at least 1");
}

/// The fp16 dino model: `--precision auto` computes it in f16 exactly where the CPU has native
/// f16 arithmetic, says so in the log, and generates what the fp32 model generates to fp16
/// rounding either way. Under qemu, cross/test.sh names the emulated core in
/// DUALSCALE_EXPECT_CPU: f16 on cortex-a76 (Pi 5), f32 on cortex-a72 (Pi 4) and the others.
#[test]
fn fp16_model_computes_in_f16_only_with_native_f16_and_matches_fp32() {
    let system: serde_json::Value = serde_json::from_slice(&dualscale(&["info", "--system", "--json"]).stdout).unwrap();
    let native_f16 = system["native_f16"].as_bool().unwrap();
    match std::env::var("DUALSCALE_EXPECT_CPU").as_deref() {
        Ok("cortex-a76") => assert!(native_f16, "{system}"),
        Ok(_) => assert!(!native_f16, "{system}"),
        Err(_) => {}
    }
    let fp16 = repo().join("models/dino-dualscale-fp16.onnx");
    let info = dualscale(&["info", fp16.to_str().unwrap(), "--json"]);
    assert_eq!(info.status.code(), Some(0), "{}", stderr(&info));
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["precision"], "fp16");
    assert_eq!(info["compute"], if native_f16 { "F16" } else { "F32" }, "native f16: {native_f16}");

    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let half = command()
        .args(["generate", "--model", fp16.to_str().unwrap(), "--count", "200", "--steps", "5", "--name", "half", "--out", o])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(half.status.code(), Some(0), "{}", stderr(&half));
    let said = if native_f16 { "fp16 model: computing in F16" } else { "fp16 model: computing in F32" };
    assert!(stderr(&half).contains(said), "{}", stderr(&half));
    let full = dualscale(&["generate", "--model", DINO, "--count", "200", "--steps", "5", "--name", "full", "--out", o]);
    assert_eq!(full.status.code(), Some(0), "{}", stderr(&full));
    let (shape, a) = read_npy(&out.path().join("half.npy"));
    let (_, b) = read_npy(&out.path().join("full.npy"));
    assert_eq!(shape, vec![200, 2]);
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(worst < 0.05, "fp16 and fp32 models differ by {worst}");

    // The embedded default is the fp16 copy of a landscape model: its image (in f16 on a76,
    // upcast elsewhere) is within a few levels of the fp32 file's.
    let img = |args: &[&str], name: &str| {
        let o = dualscale(&[&["generate"], args, &["--count", "1", "--steps", "4", "--name", name, "--out", o]].concat());
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        image::open(out.path().join(format!("{name}.png"))).unwrap().to_rgb8().into_raw()
    };
    let embedded = img(&[], "embedded");
    let fp32_file = repo().join("models").join(format!("{}.onnx", EMBEDDED_NAME.trim_end_matches("-fp16")));
    let fp32 = img(&["--model", fp32_file.to_str().unwrap()], "fp32");
    let worst = embedded.iter().zip(&fp32).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    assert!(worst <= 4, "the embedded fp16 image differs from the fp32 model's by {worst} levels");
}

// ---- issue 8: what a hostile-input and interruption test of the binary found ----

/// A tmpfs of `size` mounted for the test, or `None` (with a message) where this process may not
/// mount one (not root, or a container without CAP_SYS_ADMIN).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", dir.path().to_str().unwrap()])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "skipped: cannot mount a tmpfs here (needs root); the all-or-nothing write is also unit-tested in src/output/atomic.rs"
            );
            return None;
        }
        Some(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_during_overwrite_keeps_the_previous_results() {
    let Some(fs) = Tmpfs::mount("64k") else { return };
    let o = fs.dir.path().to_str().unwrap();
    let first = dualscale(&["generate", "--model", DINO, "--count", "300", "--steps", "5", "--out", o]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let before: Vec<(String, Vec<u8>)> =
        files_in(fs.dir.path()).into_iter().map(|n| (n.clone(), std::fs::read(fs.dir.path().join(&n)).unwrap())).collect();
    assert_eq!(before.len(), 4);
    let second = dualscale(&["generate", "--model", DINO, "--count", "600", "--steps", "5", "--overwrite", "--out", o]);
    assert_fails(&second, 1, "disk full");
    let after: Vec<(String, Vec<u8>)> =
        files_in(fs.dir.path()).into_iter().map(|n| (n.clone(), std::fs::read(fs.dir.path().join(&n)).unwrap())).collect();
    assert!(after == before, "the previous set changed: {:?}", files_in(fs.dir.path()));
}

#[test]
fn signals_during_the_write_phase_leave_all_or_nothing() {
    use std::io::BufRead;
    let unet = repo().join("tests/fixtures/unet/model.onnx");
    for signals in [1, 2] {
        let out = tempfile::tempdir().unwrap();
        // 200 images of 1 step: a short sampling phase and a write phase of 400 files.
        let mut child = command()
            .args(["generate", "--model", unet.to_str().unwrap(), "--steps", "1", "--count", "200", "--batch", "200", "--json"])
            .args(["--name", "i{index}", "--out", out.path().to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut events = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let write = events.by_ref().map(|l| l.unwrap()).find(|l| l.contains(r#""event":"write""#));
        assert!(write.is_some(), "no write event");
        for _ in 0..signals {
            Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        }
        let _rest: Vec<String> = events.map(|l| l.unwrap()).collect();
        let o = child.wait_with_output().unwrap();
        let files = files_in(out.path());
        assert!(files.iter().all(|f| !f.starts_with('.')), "{signals} signal(s): temporary files left: {files:?}");
        match o.status.code() {
            Some(130) => {
                assert!(files.is_empty(), "{signals} signal(s): exit 130 with {} files", files.len());
                assert_fails(&o, 130, "nothing was written");
            }
            // The signal came after the set was committed: the run finished.
            Some(0) => assert_eq!(files.len(), 400, "{signals} signal(s)"),
            other => panic!("{signals} signal(s): exit {other:?}: {}", stderr(&o)),
        }
    }
}

#[test]
fn sizes_are_checked_before_anything_is_allocated() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    // Once a 51 GB allocation after 24 s, and an abort.
    let started = std::time::Instant::now();
    assert_fails(&dualscale(&["generate", "--model", DINO, "--count", "100000000", "--out", o]), 2, "split the work");
    assert!(started.elapsed().as_secs() < 20, "not refused up front");
    assert_fails(&dualscale(&["generate", "--model", DINO, "--count", "1000000", "--batch", "1000000", "--out", o]), 2, "lower --batch");
    // Once panics: an overflowing duration, an absurd schedule length from a flag or a file.
    assert_fails(&dualscale(&["generate", "--model", DINO, "--time-budget", "1e20", "--out", o]), 2, "--time-budget");
    assert_fails(&dualscale(&["generate", "--model", DINO, "--train-timesteps", "100000000000", "--out", o]), 2, "--train-timesteps");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    std::fs::copy(repo().join("tests/fixtures/unet/model.onnx"), &model).unwrap();
    std::fs::write(dir.path().join("scheduler_config.json"), r#"{"_class_name": "DDPMScheduler", "num_train_timesteps": 100000000000}"#)
        .unwrap();
    assert_fails(&dualscale(&["info", model.to_str().unwrap()]), 1, "num_train_timesteps");
    assert_fails(&generate_with_model(&model, out.path()), 1, "num_train_timesteps");
    assert!(files_in(out.path()).is_empty());
}

#[test]
fn a_full_stdout_is_an_error_line_not_a_panic() {
    let out = tempfile::tempdir().unwrap();
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let o = command()
        .args(["generate", "--model", DINO, "--count", "20", "--steps", "2", "--out", out.path().to_str().unwrap()])
        .stdout(full)
        .output()
        .unwrap();
    assert_fails(&o, 1, "standard output");
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let o = command().args(["info"]).stdout(full).output().unwrap();
    assert_fails(&o, 1, "standard output");
}

#[test]
fn the_default_batch_is_bounded_and_results_do_not_depend_on_it() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let run = |name: &str, extra: &[&str]| {
        let mut args =
            vec!["generate", "--model", DINO, "--count", "2500", "--steps", "1", "--sampler", "ddpm", "--name", name, "--out", o];
        args.extend(extra);
        let r = dualscale(&args);
        assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    };
    run("a", &[]);
    let sidecar: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path().join("a.json")).unwrap()).unwrap();
    let batch = sidecar["batch"].as_u64().unwrap();
    assert!(batch < 2500, "default batch {batch} is the whole count");
    run("b", &["--batch", "2500"]);
    assert_eq!(read_npy(&out.path().join("a.npy")), read_npy(&out.path().join("b.npy")));
}

#[test]
fn external_weights_are_covered_by_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let src = repo().join("tests/fixtures/unet-external");
    for f in ["model.onnx", "model.onnx.data", "scheduler_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let model = dir.path().join("model.onnx");
    let sha = |p: &Path| dualscale::manifest::sha256_hex(&std::fs::read(p).unwrap());
    let manifest = |external: Option<String>| {
        let mut m = serde_json::json!({
            "format": "dualscale-manifest/1", "name": "unet-external", "kind": "image", "sha256": sha(&model),
            "prediction_type": "epsilon",
            "scheduler": {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"},
        });
        if let Some(e) = external {
            m["external_data_sha256"] = serde_json::json!({"model.onnx.data": e});
        }
        std::fs::write(dir.path().join("model.json"), m.to_string()).unwrap();
    };
    let info = |path: &Path| -> serde_json::Value {
        serde_json::from_slice(&dualscale(&["info", path.to_str().unwrap(), "--json"]).stdout).unwrap()
    };
    // Only the .onnx file's hash: not "verified", and it says why.
    manifest(None);
    let i = info(&model);
    assert_eq!(i["verified"], false, "{i}");
    assert!(i["verification"].as_str().unwrap().contains("model.onnx.data"), "{i}");
    // With the weights' hash: verified; with corrupted weights: refused.
    manifest(Some(sha(&dir.path().join("model.onnx.data"))));
    assert_eq!(info(&model)["verified"], true);
    let mut data = std::fs::read(dir.path().join("model.onnx.data")).unwrap();
    data[1000] ^= 0x40;
    std::fs::write(dir.path().join("model.onnx.data"), &data).unwrap();
    assert_fails(&dualscale(&["info", model.to_str().unwrap()]), 1, "model.onnx.data has sha256");
}

#[test]
fn what_cannot_be_written_is_refused_before_sampling() {
    let out = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // These models return NaN: had sampling run first, the error would be the NaN.
    let two = dir.path().join("two-channels.onnx");
    std::fs::write(&two, tiny_model(&[("x", &[-1, 2, 4, 4]), ("t", &[-1])], "NaN", "eps")).unwrap();
    assert_fails(&generate_with_model(&two, out.path()), 1, "2-channel images");
    let points = dir.path().join("nan.onnx");
    std::fs::write(&points, tiny_model(&[("x", &[-1, 2]), ("t", &[-1])], "NaN", "eps")).unwrap();
    let long = "n".repeat(250);
    let o = dualscale(&["generate", "--model", points.to_str().unwrap(), "--name", &long, "--out", out.path().to_str().unwrap()]);
    assert_fails(&o, 2, "at most 243");
    assert!(files_in(out.path()).is_empty());
    // 1-D points: CSV, .npy and the recipe, no scatter plot.
    let one = dir.path().join("one-d.onnx");
    std::fs::write(&one, tiny_model(&[("x", &[-1, 1]), ("t", &[-1])], "Add", "eps")).unwrap();
    let o = dualscale(&[
        "generate",
        "--model",
        one.to_str().unwrap(),
        "--count",
        "10",
        "--steps",
        "2",
        "--name",
        "one",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(files_in(out.path()), ["one.csv", "one.json", "one.npy"]);
}

#[test]
fn eval_finds_shipped_references_from_any_directory() {
    // The installed layout: PREFIX/bin/dualscale and PREFIX/share/dualscale/models/data/, run
    // from an unrelated directory (once, `--reference dino` worked only from the repo root).
    let prefix = tempfile::tempdir().unwrap();
    let bin = prefix.path().join("bin");
    let data = prefix.path().join("share/dualscale/models/data");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_dualscale"), bin.join("dualscale")).unwrap();
    std::fs::copy(repo().join("models/data/dino.npy"), data.join("dino.npy")).unwrap();
    let samples = prefix.path().join("s.npy");
    std::fs::copy(repo().join("tests/fixtures/kl/data.npy"), &samples).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let mut cmd = common::command_for(&bin.join("dualscale"));
    let o = cmd.args(["eval", samples.to_str().unwrap(), "--reference", "dino"]).current_dir(elsewhere.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().is_ok());
}

#[test]
fn messages_say_each_cause_once_and_blame_the_right_thing() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let e = stderr(&dualscale(&["generate", "--model", DINO, "--init-noise", "/nonexistent/noise.npy", "--out", o]));
    assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");
    // A file of 500 samples of the wrong size does not suggest --count 500 when it is 500.
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("noise.npy");
    std::fs::write(&npy, dualscale::npy::to_bytes_f32(&[500, 3], &vec![0.0; 1500])).unwrap();
    let e = stderr(&dualscale(&["generate", "--model", DINO, "--init-noise", npy.to_str().unwrap(), "--count", "500", "--out", o]));
    assert!(!e.contains("--count 500"), "{e}");
    // A bad diffusers config points at diffusers, not at this project's manifest format.
    let model = dir.path().join("model.onnx");
    std::fs::copy(repo().join("tests/fixtures/unet/model.onnx"), &model).unwrap();
    std::fs::write(dir.path().join("scheduler_config.json"), r#"{"beta_schedule": "wobbly"}"#).unwrap();
    let e = stderr(&generate_with_model(&model, out.path()));
    assert!(e.contains("diffusers") && !e.contains("MANIFEST.md"), "{e}");
    // A bad model name in a manifest is the manifest's fault, not --name's.
    let good = std::fs::read_to_string(repo().join("models/dino-dualscale.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["name"] = serde_json::Value::String("a/b".into());
    let (_d, p) = model_copy(Some(&v.to_string()));
    let o2 = generate_with_model(&p, out.path());
    assert_fails(&o2, 1, "key `name`");
    assert!(!stderr(&o2).contains("--name"), "{}", stderr(&o2));
    assert!(files_in(out.path()).is_empty());
}

#[test]
fn exit_codes_and_silently_ignored_input() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    assert_fails(&dualscale(&["generate", "--model", DINO, "--rtol", "NaN", "--out", o]), 2, "--rtol");
    assert_fails(&dualscale(&["generate", "--model", DINO, "--rtol", "0", "--out", o]), 2, "--rtol");
    // leading spacing lays out N+1 points for multistep solvers: 100 steps of 100 cannot run.
    assert_fails(
        &dualscale(&["generate", "--model", DINO, "--sampler", "unipc", "--steps", "100", "--spacing", "leading", "--out", o]),
        2,
        "steps",
    );
    assert_fails(&dualscale(&["generate", "--model", DINO, "--beta-start", "0.02", "--beta-end", "0.0001", "--out", o]), 2, "beta_end");
    let warned =
        dualscale(&["generate", "--model", DINO, "--sampler", "unipc", "--eta", "0.5", "--count", "10", "--steps", "2", "--out", o]);
    assert_eq!(warned.status.code(), Some(0), "{}", stderr(&warned));
    assert!(stderr(&warned).contains("--eta applies to"), "{}", stderr(&warned));
}

#[test]
fn json_mode_reports_load_and_write_failures_as_events() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    for args in [
        vec!["generate", "--json", "--model", "/nonexistent/model.onnx", "--out", o],
        vec!["generate", "--model", DINO, "--json", "--count", "10", "--steps", "2", "--out", "/proc/self"],
    ] {
        let r = dualscale(&args);
        assert_eq!(r.status.code(), Some(1), "{args:?}: {}", stderr(&r));
        let last: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&r.stdout).lines().last().expect("an event")).unwrap();
        assert_eq!(last["event"], "error", "{args:?}");
        assert!(!last["message"].as_str().unwrap().is_empty());
    }
}

#[test]
fn precision_f16_narrows_an_fp32_model() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let half = command()
        .args(["generate", "--model", DINO, "--precision", "f16", "--count", "20", "--steps", "2", "--name", "half", "--out", o])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(half.status.code(), Some(0), "{}", stderr(&half));
    assert!(stderr(&half).contains("fp32 model narrowed to f16"), "{}", stderr(&half));
    let full = dualscale(&["generate", "--model", DINO, "--count", "20", "--steps", "2", "--name", "full", "--out", o]);
    assert_eq!(full.status.code(), Some(0));
    let (_, a) = read_npy(&out.path().join("half.npy"));
    let (_, b) = read_npy(&out.path().join("full.npy"));
    assert!(a.iter().all(|v| v.is_finite()));
    assert_ne!(a, b, "f16 computation gives f16 rounding, not the f32 result");
    let sidecar: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path().join("half.json")).unwrap()).unwrap();
    assert_eq!(sidecar["compute"], "F16");
}

#[test]
fn upscale_enlarges_image_pngs_for_display() {
    let unet = repo().join("tests/fixtures/unet/model.onnx");
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    for (name, extra) in
        [("plain", vec![]), ("big", vec!["--upscale", "4"]), ("soft", vec!["--upscale", "3", "--upscale-filter", "smooth"])]
    {
        let mut args = vec!["generate", "--model", unet.to_str().unwrap(), "--steps", "2", "--name", name, "--out", o];
        args.extend(extra);
        let r = dualscale(&args);
        assert_eq!(r.status.code(), Some(0), "{name}: {}", stderr(&r));
    }
    let size = |n: &str| {
        let img = image::open(out.path().join(format!("{n}.png"))).unwrap();
        (img.width(), img.height())
    };
    assert_eq!(size("plain"), (16, 16));
    assert_eq!(size("big"), (64, 64));
    assert_eq!(size("soft"), (48, 48));
    // Nearest: every 4x4 block of the big image is one pixel of the plain one.
    let plain = image::open(out.path().join("plain.png")).unwrap().to_rgb8();
    let big = image::open(out.path().join("big.png")).unwrap().to_rgb8();
    for (x, y, p) in big.enumerate_pixels() {
        assert_eq!(p, plain.get_pixel(x / 4, y / 4));
    }
    let sidecar: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path().join("big.json")).unwrap()).unwrap();
    assert_eq!(sidecar["upscale"], "4x nearest");
    assert_fails(&dualscale(&["generate", "--model", DINO, "--upscale", "0", "--out", o]), 2, "--upscale");
}

#[test]
fn bench_without_batches_sizes_up_the_board() {
    // The small diffusers UNet: a board summary of an image model (one image per core).
    let unet = repo().join("tests/fixtures/unet/model.onnx");
    let o = dualscale(&["bench", "--model", unet.to_str().unwrap(), "--iters", "2", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!rows.is_empty());
    assert_eq!(rows[0]["precision"], "f32", "f32 always comes first");
    for row in &rows {
        assert!(row["eval_ms"].as_f64().unwrap() > 0.0 && row["samples_per_s"].as_f64().unwrap() > 0.0, "{row}");
        let steps: Vec<u64> = row["budget_steps"].as_array().unwrap().iter().map(|b| b["steps"].as_u64().unwrap()).collect();
        assert!(steps.windows(2).all(|w| w[0] <= w[1]), "more time, no fewer steps: {steps:?}");
        assert!(steps.iter().all(|&n| n <= 1000), "capped at the schedule's 1000 timesteps: {steps:?}");
        assert_eq!(row["what"], "images");
    }
}

/// A shipped few-step model whose manifest recommends a multistep solver and 8 timesteps.
const FEWSTEP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/moons-dualscale-fewstep.onnx");

/// The (sampler, timesteps) the few-step model's manifest recommends.
fn fewstep_recommended() -> (String, Vec<f64>) {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(Path::new(FEWSTEP).with_extension("json")).unwrap()).unwrap();
    let ts = v["sampler"]["timesteps"].as_array().unwrap().iter().map(|t| t.as_f64().unwrap()).collect();
    (v["sampler"]["type"].as_str().unwrap().to_owned(), ts)
}

/// Runs `generate` on the few-step model with `flags` and returns (sampler, visited timesteps)
/// from the sidecar, or the failed output.
fn fewstep_run(flags: &[&str]) -> Result<(String, Vec<f64>), Output> {
    let out = tempfile::tempdir().unwrap();
    let mut args = vec!["generate", "--model", FEWSTEP, "--count", "64", "--out", out.path().to_str().unwrap()];
    args.extend_from_slice(flags);
    let o = dualscale(&args);
    if o.status.code() != Some(0) {
        assert!(files_in(out.path()).is_empty(), "a refused run wrote files: {:?}", files_in(out.path()));
        return Err(o);
    }
    let text = std::fs::read_to_string(out.path().join("moons-dualscale-fewstep-s0-0.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ts = v["timesteps"].as_array().unwrap().iter().map(|t| t.as_f64().unwrap()).collect();
    Ok((v["sampler"].as_str().unwrap().to_owned(), ts))
}

#[test]
fn a_few_step_model_runs_its_recommended_sampler_unless_told_otherwise() {
    let (recommended, list) = fewstep_recommended();
    assert_eq!((recommended.as_str(), list.len()), ("dpmpp-3m", 8), "the test expects a multistep solver over 8 steps");
    let run = |flags: &[&str]| fewstep_run(flags).unwrap_or_else(|o| panic!("{flags:?}: {}", stderr(&o)));
    // By default, with its own step count, and within a time budget that buys it.
    assert_eq!(run(&[]), ("dpmpp-3m".into(), list.clone()));
    assert_eq!(run(&["--steps", "8"]), ("dpmpp-3m".into(), list.clone()));
    assert_eq!(run(&["--sampler", "dpmpp-3m"]), ("dpmpp-3m".into(), list.clone()));
    assert_eq!(run(&["--time-budget", "1h"]), ("dpmpp-3m".into(), list.clone()));
    // Another step count or spacing lays its steps out by the schedule's spacing; another
    // sampler sets the recommendation aside.
    assert_eq!(run(&["--steps", "4"]), ("dpmpp-3m".into(), vec![99.0, 74.0, 49.0, 24.0]));
    let (kind, ts) = run(&["--spacing", "leading"]);
    assert_eq!((kind.as_str(), ts.len()), ("dpmpp-3m", 20));
    let (kind, ts) = run(&["--sampler", "ddim"]);
    assert_eq!((kind.as_str(), ts.len()), ("ddim", 20));
    // An explicit list, with any fixed-step sampler.
    assert_eq!(run(&["--timesteps", "99,40,5", "--sampler", "ddim"]), ("ddim".into(), vec![99.0, 40.0, 5.0]));
    assert_eq!(run(&["--timesteps", "99,40,5", "--sampler", "heun"]), ("heun".into(), vec![99.0, 40.0, 5.0]));
}

#[test]
fn bad_timestep_lists_are_usage_errors() {
    let fails = |flags: &[&str], needle: &str| assert_fails(&fewstep_run(flags).expect_err("should fail"), 2, needle);
    fails(&["--timesteps", "50,60"], "strictly decrease");
    fails(&["--timesteps", "100,5"], "not below the model's 100");
    fails(&["--timesteps", "9,x"], "--timesteps");
    fails(&["--timesteps", "9,5", "--steps", "2"], "--steps");
    fails(&["--timesteps", "9,5", "--sampler", "adaptive"], "adaptive");
}

#[test]
fn a_bad_recommended_sampler_in_a_manifest_is_named() {
    let good = std::fs::read_to_string(Path::new(FEWSTEP).with_extension("json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["sampler"]["timesteps"] = serde_json::json!([99, 99, 0]);
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("moons-dualscale-fewstep.onnx");
    std::fs::copy(FEWSTEP, &model).unwrap();
    std::fs::write(dir.path().join("moons-dualscale-fewstep.json"), v.to_string()).unwrap();
    let out = dir.path().join("out");
    assert_fails(&generate_with_model(&model, &out), 1, "key `sampler` has an invalid value");
    assert!(!out.exists());
}

#[test]
fn images_on_two_threads_are_the_images_of_one() {
    let out = tempfile::tempdir().unwrap();
    let run = |threads: &str| {
        let dir = out.path().join(threads);
        let o = dualscale(&["generate", "--count", "3", "--steps", "3", "--threads", threads, "--out", dir.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let sidecar: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{EMBEDDED_NAME}-s0-0.json"))).unwrap()).unwrap();
        let images: Vec<Vec<u8>> =
            (0..3).map(|i| image::open(dir.join(format!("{EMBEDDED_NAME}-s0-{i}.png"))).unwrap().to_rgb8().into_raw()).collect();
        (sidecar["batch"].as_u64().unwrap(), images)
    };
    let (batch1, one) = run("1");
    let (batch2, two) = run("2");
    // One image per thread by default, each on its own batch-1 plan.
    assert_eq!((batch1, batch2), (1, 2));
    assert!(one == two, "the images depend on the thread count");
}

/// The int8 dino model (models/train/int8.py) relies on tract's float-to-int8 `Cast` saturating
/// (ONNX leaves out-of-range casts undefined): were it to wrap, its points would be far off the
/// fp32 model's. It must verify, say it is int8, and stay within a small distance of fp32.
#[test]
fn int8_model_runs_in_tract_and_matches_fp32() {
    let int8 = repo().join("models/dino-dualscale-int8.onnx");
    let info = dualscale(&["info", int8.to_str().unwrap(), "--json"]);
    assert_eq!(info.status.code(), Some(0), "{}", stderr(&info));
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!((info["precision"].as_str(), info["verified"].as_bool()), (Some("int8"), Some(true)), "{info}");
    assert_eq!(info["integer_products"], true, "{info}");
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    for (model, name) in [(int8.to_str().unwrap(), "int8"), (DINO, "fp32")] {
        let run = dualscale(&["generate", "--model", model, "--count", "200", "--steps", "5", "--name", name, "--out", o]);
        assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    }
    let (_, a) = read_npy(&out.path().join("int8.npy"));
    let (_, b) = read_npy(&out.path().join("fp32.npy"));
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    // Measured on x86_64: 0.0098 (points span about +-4.5).
    assert!(worst < 0.05, "int8 and fp32 models differ by {worst}");
}

/// The image models' int8 files keep int8 weights behind DequantizeLinear (tract folds them into
/// f32 weights at load): `info` must not claim integer products, and the 4-step model's images
/// stay close to the fp32 file's.
#[test]
fn int8_image_model_stores_int8_weights_and_paints_like_fp32() {
    let int8 = repo().join("models/landscape-dualscale-fewstep-int8.onnx");
    let fp32 = repo().join("models/landscape-dualscale-fewstep.onnx");
    let info = dualscale(&["info", int8.to_str().unwrap(), "--json"]);
    assert_eq!(info.status.code(), Some(0), "{}", stderr(&info));
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!((info["precision"].as_str(), info["integer_products"].as_bool()), (Some("int8"), Some(false)), "{info}");
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    for (model, name) in [(&int8, "int8"), (&fp32, "fp32")] {
        let run = dualscale(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--count",
            "2",
            "--seed",
            "5",
            "--name",
            &format!("{name}-{{index}}"),
            "--out",
            o,
        ]);
        assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    }
    for i in 0..2 {
        let read = |name: &str| image::open(out.path().join(format!("{name}-{i}.png"))).unwrap().to_rgb8().into_raw();
        let (a, b) = (read("int8"), read("fp32"));
        let worst = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
        let mean = a.iter().zip(&b).map(|(x, y)| f64::from(x.abs_diff(*y))).sum::<f64>() / a.len() as f64;
        // Measured on x86_64, seed 5, 8 images: at most 5 levels of 255, mean 0.5-1.3.
        assert!(worst <= 16 && mean <= 3.0, "image {i}: int8 and fp32 differ by up to {worst} levels (mean {mean:.2})");
    }
}

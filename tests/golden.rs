//! Golden outputs: the files `dualscale generate` wrote before generation moved into the library
//! pipeline (issue 8), committed under `tests/fixtures/golden/` with the commands that made them
//! (`tests/fixtures/golden/README.md`). The same commands must write the same files: data (CSV,
//! NPY) byte for byte, image PNGs byte for byte but for the version in their `parameters`
//! chunk, sidecars equal but for the version, the timing and the directory, and scatter plots
//! pixel for pixel (their `parameters` chunk is new on purpose).

use std::path::Path;

mod common;

use common::{command, repo};

fn run_into(args: &[&str], out: &Path) {
    let o = command().args(args).arg("--out").arg(out).env_remove("RUST_LOG").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// Pixels (RGB or gray, 8-bit) and the `parameters` text of a PNG.
fn decode(bytes: &[u8]) -> (Vec<u8>, Option<String>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    buf.truncate(frame.buffer_size());
    let text = reader.info().uncompressed_latin1_text.iter().find(|t| t.keyword == "parameters").map(|t| t.text.clone());
    (buf, text)
}

fn without_version(text: &str) -> String {
    text.split(", Version: ").next().unwrap().to_owned()
}

/// A sidecar with the fields that legitimately differ between runs made uniform.
fn normalized_sidecar(bytes: &[u8]) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    let obj = v.as_object_mut().unwrap();
    for key in ["dualscale_version", "sampling_seconds", "created_unix"] {
        assert!(obj.remove(key).is_some(), "sidecar lacks {key}");
    }
    if let Some(files) = obj.get_mut("files") {
        for f in files.as_array_mut().unwrap() {
            let name = Path::new(f.as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
            *f = serde_json::Value::String(name);
        }
    }
    if let Some(p) = obj.get_mut("parameters") {
        *p = serde_json::Value::String(without_version(p.as_str().unwrap()));
    }
    v
}

fn compare(case: &str, args: &[&str]) {
    // The files were made on x86_64; other architectures' matrix kernels round differently.
    if !cfg!(target_arch = "x86_64") {
        eprintln!("skipped: the golden files are x86_64 results; this is {}", std::env::consts::ARCH);
        return;
    }
    let golden = repo().join("tests/fixtures/golden").join(case);
    let out = tempfile::tempdir().unwrap();
    run_into(args, out.path());
    let mut names: Vec<String> =
        std::fs::read_dir(&golden).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let mut written: Vec<String> =
        std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    written.sort();
    assert_eq!(written, names, "{case}: the same files");
    for name in &names {
        let want = std::fs::read(golden.join(name)).unwrap();
        let got = std::fs::read(out.path().join(name)).unwrap();
        match Path::new(name).extension().unwrap().to_str().unwrap() {
            "csv" | "npy" => assert!(got == want, "{case}/{name} differs from the golden file"),
            "json" => assert_eq!(normalized_sidecar(&got), normalized_sidecar(&want), "{case}/{name}"),
            "png" => {
                let (got_px, got_text) = decode(&got);
                let (want_px, want_text) = decode(&want);
                assert!(got_px == want_px, "{case}/{name}: pixels differ");
                match want_text {
                    // Image PNGs: the same recipe line but for the version.
                    Some(w) => assert_eq!(got_text.map(|t| without_version(&t)), Some(without_version(&w)), "{case}/{name}"),
                    // Scatter plots had no parameters chunk; now they say how they were made.
                    None => assert!(got_text.is_some_and(|t| t.starts_with("Steps: ")), "{case}/{name}: no parameters chunk"),
                }
            }
            other => panic!("unexpected golden file type {other}"),
        }
    }
}

#[test]
fn ddim_points_match_the_golden_files() {
    let dino = repo().join("models/dino-dualscale.onnx");
    compare(
        "points",
        &[
            "generate",
            "--model",
            dino.to_str().unwrap(),
            "--seed",
            "7",
            "--count",
            "300",
            "--batch",
            "300",
            "--sampler",
            "ddim",
            "--steps",
            "10",
            "--spacing",
            "leading",
            "--name",
            "golden-ddim",
        ],
    );
}

#[test]
fn ddpm_points_in_batches_match_the_golden_files() {
    let dino = repo().join("models/dino-dualscale.onnx");
    compare(
        "ddpm",
        &[
            "generate",
            "--model",
            dino.to_str().unwrap(),
            "--seed",
            "11",
            "--count",
            "300",
            "--batch",
            "128",
            "--sampler",
            "ddpm",
            "--spacing",
            "leading",
            "--name",
            "golden-ddpm",
        ],
    );
}

#[test]
fn unet_images_match_the_golden_files() {
    let model = repo().join("tests/fixtures/unet/model.onnx");
    compare(
        "image",
        &[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--seed",
            "3",
            "--count",
            "2",
            "--batch",
            "1",
            "--sampler",
            "dpmpp-2m",
            "--steps",
            "5",
            "--name",
            "golden-{index}",
        ],
    );
}

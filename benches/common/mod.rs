//! What the benches share: the shipped models, and a generator for one of them.
#![allow(dead_code)]

use std::path::PathBuf;

use dualscale::model::{LoadOptions, Model, ModelSource};
use dualscale::pipeline::Generator;

/// Every shipped model file (`models/*.onnx`), sorted.
pub fn shipped_models() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut models: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "onnx")).collect();
    models.sort();
    models
}

pub fn generator(source: ModelSource) -> Generator {
    Generator::new(Model::open(&source, &LoadOptions::default()).unwrap()).unwrap()
}

pub fn stem(path: &std::path::Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

//! What an ONNX graph declares, read from its protobuf before tract touches it: inputs and
//! outputs with dtypes and shapes, parameter count and weight precision, and from the inputs the
//! kind of model ([`ModelKind`]: points or images) and which input is the timestep.

use std::collections::HashMap;
use std::path::Path;

use tract_onnx::pb;
use tract_onnx::prelude::*;

use super::{IoInfo, ModelError, ModelKind, TimestepShape};

/// The model's name when no manifest gives one: the file stem, or the folder of a diffusers
/// `model.onnx`.
pub(super) fn default_name(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    if stem == "model" {
        // diffusers layout: unet/model.onnx -> name of the parent folder
        if let Some(parent) = path.parent().and_then(Path::file_name).and_then(|s| s.to_str()) {
            return parent.to_owned();
        }
    }
    stem.to_owned()
}

fn onnx_dtype(elem_type: i32) -> DatumType {
    use pb::tensor_proto::DataType as D;
    match D::try_from(elem_type) {
        Ok(D::Float) => DatumType::F32,
        Ok(D::Float16) => DatumType::F16,
        Ok(D::Double) => DatumType::F64,
        Ok(D::Int64) => DatumType::I64,
        Ok(D::Int32) => DatumType::I32,
        Ok(D::Int8) => DatumType::I8,
        Ok(D::Uint8) => DatumType::U8,
        Ok(D::Bool) => DatumType::Bool,
        _ => DatumType::String,
    }
}

pub(super) fn io_info(v: &pb::ValueInfoProto) -> IoInfo {
    let mut info = IoInfo { name: v.name.clone(), dtype: DatumType::String, shape: vec![], dim_names: vec![] };
    if let Some(pb::type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        info.dtype = onnx_dtype(t.elem_type);
        if let Some(shape) = &t.shape {
            for d in &shape.dim {
                match &d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v > 0 => {
                        info.shape.push(Some(*v as usize));
                        info.dim_names.push(String::new());
                    }
                    Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) => {
                        info.shape.push(None);
                        info.dim_names.push(p.clone());
                    }
                    _ => {
                        info.shape.push(None);
                        info.dim_names.push(String::new());
                    }
                }
            }
        }
    }
    info
}

/// Graph inputs that are not initializers (older exporters list weights as inputs), and outputs.
pub(super) fn declared_io(g: &pb::GraphProto) -> (Vec<IoInfo>, Vec<IoInfo>) {
    let weights: std::collections::HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = g.input.iter().filter(|i| !weights.contains(i.name.as_str())).map(io_info).collect();
    let outputs = g.output.iter().map(io_info).collect();
    (inputs, outputs)
}

/// Parameter count and precision name from the initializers.
pub(super) fn weight_summary(g: &pb::GraphProto) -> (u64, &'static str) {
    use pb::tensor_proto::DataType as D;
    let mut total = 0u64;
    let mut by_type: HashMap<i32, u64> = HashMap::new();
    for t in &g.initializer {
        let count: u64 = t.dims.iter().map(|&d| d.max(0) as u64).product::<u64>().max(1);
        if count > 1 {
            total += count;
        }
        *by_type.entry(t.data_type).or_default() += count;
    }
    let count_of = |d: D| by_type.get(&(d as i32)).copied().unwrap_or(0);
    let precision = if count_of(D::Int8) + count_of(D::Uint8) > count_of(D::Float) / 4 {
        "int8"
    } else if count_of(D::Float16) > count_of(D::Float) {
        "fp16"
    } else {
        "fp32"
    };
    (total, precision)
}

/// Operators that multiply in integers: an int8 file with them computes its products in int8; one
/// without keeps int8 weights that are dequantized to floats when the plan is built.
const INTEGER_PRODUCT_OPS: &[&str] = &["MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv"];

/// Whether the graph multiplies in integers (see INTEGER_PRODUCT_OPS).
pub(super) fn has_integer_products(g: &pb::GraphProto) -> bool {
    g.node.iter().any(|n| INTEGER_PRODUCT_OPS.contains(&n.op_type.as_str()))
}

const TIMESTEP_NAMES: &[&str] = &["t", "timestep", "timesteps", "time", "sigma"];

/// Decides the model kind from its inputs: (kind, sample input, timestep input, timestep shape).
pub(super) fn classify(inputs: &[IoInfo], path: &Path) -> Result<(ModelKind, usize, usize, TimestepShape), ModelError> {
    let unsupported = |detail: String| ModelError::UnsupportedInputs { path: path.to_owned(), detail };
    let listing = inputs.iter().map(|i| format!("`{}` {}", i.name, i.shape_string())).collect::<Vec<_>>().join(", ");
    if inputs.len() != 2 {
        return Err(unsupported(format!(
            "the model has {} inputs ({listing}); dualscale runs denoisers with two: a sample [N,D] or [N,C,H,W] and a timestep [N] or scalar",
            inputs.len()
        )));
    }
    let t_ix = inputs
        .iter()
        .position(|i| TIMESTEP_NAMES.contains(&i.name.as_str()))
        .or_else(|| inputs.iter().position(|i| i.shape.len() <= 1))
        .ok_or_else(|| {
            unsupported(format!("no input looks like a timestep ({listing}); name it `t` or `timestep`, shape [N] or scalar"))
        })?;
    let x_ix = 1 - t_ix;
    let (x, t) = (&inputs[x_ix], &inputs[t_ix]);
    if !matches!(t.dtype, DatumType::F32 | DatumType::F64 | DatumType::F16 | DatumType::I64 | DatumType::I32) {
        return Err(unsupported(format!("timestep input `{}` has type {:?}; expected a float or integer", t.name, t.dtype)));
    }
    let t_shape = match t.shape.as_slice() {
        [] => TimestepShape::Scalar,
        [Some(1)] => TimestepShape::One,
        [_] => TimestepShape::PerSample,
        _ => return Err(unsupported(format!("timestep input `{}` has shape {}; expected [N], [1] or a scalar", t.name, t.shape_string()))),
    };
    if !matches!(x.dtype, DatumType::F32 | DatumType::F16) {
        return Err(unsupported(format!("sample input `{}` has type {:?}; expected float32 or float16", x.name, x.dtype)));
    }
    let kind = match x.shape.as_slice() {
        [_, Some(d)] => ModelKind::Points { dim: *d },
        [_, Some(c), Some(h), Some(w)] => ModelKind::Image { channels: *c, height: *h, width: *w },
        _ => {
            return Err(unsupported(format!(
                "sample input `{}` has shape {}; dualscale supports [N,D] point models and [N,C,H,W] image models with fixed D, C, H, W",
                x.name,
                x.shape_string()
            )))
        }
    };
    Ok((kind, x_ix, t_ix, t_shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(name: &str, dtype: DatumType, shape: &[Option<usize>]) -> IoInfo {
        IoInfo { name: name.into(), dtype, shape: shape.to_vec(), dim_names: vec![String::new(); shape.len()] }
    }

    #[test]
    fn classifies_points_and_images() {
        let p = Path::new("m.onnx");
        let (k, x, t, s) = classify(&[io("x", DatumType::F32, &[None, Some(2)]), io("t", DatumType::F32, &[None])], p).unwrap();
        assert_eq!((k, x, t, s), (ModelKind::Points { dim: 2 }, 0, 1, TimestepShape::PerSample));
        let (k, x, t, s) =
            classify(&[io("timestep", DatumType::I64, &[]), io("sample", DatumType::F32, &[None, Some(3), Some(16), Some(16)])], p)
                .unwrap();
        assert_eq!((k, x, t, s), (ModelKind::Image { channels: 3, height: 16, width: 16 }, 1, 0, TimestepShape::Scalar));
    }

    #[test]
    fn rejects_models_that_fit_no_kind() {
        let p = Path::new("m.onnx");
        let err = classify(&[io("input", DatumType::F32, &[None, Some(3), Some(4)])], p).unwrap_err();
        assert!(err.to_string().contains("has 1 inputs"), "{err}");
        let err = classify(&[io("x", DatumType::F32, &[None, Some(3), Some(4)]), io("t", DatumType::F32, &[None])], p).unwrap_err();
        assert!(err.to_string().contains("[N,D] point models"), "{err}");
    }
}

//! NumPy `.npy` files: reads format versions 1.0, 2.0 and 3.0 holding little- or big-endian
//! `f2` / `f4` / `f8` arrays in C order (any shape; `f2` is exact in f32 through `half`, `f8` rounds), and writes `'<f4'` arrays
//! exactly as `numpy.save` does (version 1.0, header padded so the data starts on a 64-byte
//! boundary). This module does no file writing of its own (callers pass the bytes to
//! `output::write_atomic`), never panics on a malformed file, and never guesses: anything it does
//! not understand is an [`NpyError`] that says what was found.
//!
//! Format reference: numpy's `numpy/lib/format.py` (NEP 1): magic `\x93NUMPY`, major and minor
//! version bytes, header length (u16 LE for 1.0, u32 LE for 2.0 and 3.0), then a Python dict
//! literal with keys `descr`, `fortran_order` and `shape`, padded with spaces and ended by `\n`.

use std::path::{Path, PathBuf};

/// What is wrong with a `.npy` file or a request to write one.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("could not read {path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("not a .npy file: it does not start with the magic bytes \\x93NUMPY; save the array with numpy.save")]
    BadMagic,
    #[error("unsupported .npy format version {major}.{minor}; versions 1.0, 2.0 and 3.0 are read - save it again with numpy.save")]
    UnsupportedVersion { major: u8, minor: u8 },
    #[error("truncated .npy file: the {what} needs {need} bytes but only {have} are present; the file was cut short - write it again")]
    Truncated { what: &'static str, need: u64, have: u64 },
    #[error("malformed .npy header: {0}; save the array with numpy.save")]
    BadHeader(String),
    #[error("unsupported .npy dtype {0}; only float16 ('<f2'), float32 ('<f4') and float64 ('<f8') arrays are read - convert with arr.astype('<f4')")]
    UnsupportedDtype(String),
    #[error("the .npy array is stored in Fortran order; save a C-ordered copy (numpy.ascontiguousarray(arr))")]
    FortranOrder,
    #[error("the .npy shape {shape:?} needs {need} bytes of data but the file holds {have}; the file is damaged - write it again")]
    LengthMismatch { shape: Vec<usize>, need: u64, have: u64 },
    #[error("the .npy shape {0:?} has more elements than this machine can address")]
    ShapeOverflow(Vec<usize>),
    #[error(
        "cannot write a .npy array of shape {shape:?} ({need} values) from {have} values; pass a shape whose product is the data length"
    )]
    ShapeDataMismatch { shape: Vec<usize>, need: u128, have: usize },
}

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// numpy's `ARRAY_ALIGN`: the data starts at a multiple of this many bytes.
const ARRAY_ALIGN: usize = 64;
/// numpy's `GROWTH_AXIS_MAX_DIGITS`: spare header room so the shape can grow in place.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;

/// Reads a `.npy` file's bytes: returns the shape (empty for a 0-d array, which holds one value)
/// and the values in C order, converted to f32 (f8 values round to nearest; magnitudes beyond
/// f32's range become infinite).
pub fn read_f32(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), NpyError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(NpyError::BadMagic);
    }
    let prefix_len = |have: usize, need: usize| {
        if have < need {
            Err(NpyError::Truncated { what: "header prefix", need: need as u64, have: have as u64 })
        } else {
            Ok(())
        }
    };
    prefix_len(bytes.len(), 8)?;
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_start, header_len) = match (major, minor) {
        (1, 0) => {
            prefix_len(bytes.len(), 10)?;
            (10usize, usize::from(u16::from_le_bytes([bytes[8], bytes[9]])))
        }
        (2, 0) | (3, 0) => {
            prefix_len(bytes.len(), 12)?;
            let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (12usize, usize::try_from(n).map_err(|_| NpyError::BadHeader("header length too large".into()))?)
        }
        _ => return Err(NpyError::UnsupportedVersion { major, minor }),
    };
    let header_end = header_start.checked_add(header_len).ok_or_else(|| NpyError::BadHeader("header length too large".into()))?;
    if bytes.len() < header_end {
        return Err(NpyError::Truncated { what: "header", need: header_end as u64, have: bytes.len() as u64 });
    }
    let raw = &bytes[header_start..header_end];
    let text: String = if major == 3 {
        std::str::from_utf8(raw).map_err(|_| NpyError::BadHeader("a version 3.0 header that is not UTF-8".into()))?.to_owned()
    } else {
        raw.iter().map(|&b| char::from(b)).collect() // latin-1
    };
    let header = parse_header(&text)?;
    if header.fortran_order {
        return Err(NpyError::FortranOrder);
    }
    let (item_size, big_endian) = match header.descr.as_str() {
        "<f2" => (2usize, false),
        ">f2" => (2, true),
        "<f4" => (4usize, false),
        "<f8" => (8, false),
        ">f4" => (4, true),
        ">f8" => (8, true),
        other => return Err(NpyError::UnsupportedDtype(format!("'{other}'"))),
    };
    let shape = header.shape;
    let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| NpyError::ShapeOverflow(shape.clone()))?;
    let need = count.checked_mul(item_size).ok_or_else(|| NpyError::ShapeOverflow(shape.clone()))?;
    let data = &bytes[header_end..];
    if data.len() < need {
        return Err(NpyError::Truncated {
            what: "array data",
            need: (header_end as u64).saturating_add(need as u64),
            have: bytes.len() as u64,
        });
    }
    if data.len() > need {
        return Err(NpyError::LengthMismatch { shape, need: need as u64, have: data.len() as u64 });
    }
    let values: Vec<f32> = if item_size == 2 {
        // float16 (what `arr.astype(np.float16)` saves): exact in f32.
        data.chunks_exact(2)
            .map(|c| {
                let bits = if big_endian { u16::from_be_bytes([c[0], c[1]]) } else { u16::from_le_bytes([c[0], c[1]]) };
                half::f16::from_bits(bits).to_f32()
            })
            .collect()
    } else if item_size == 4 {
        data.chunks_exact(4)
            .map(|c| {
                let b = [c[0], c[1], c[2], c[3]];
                if big_endian {
                    f32::from_be_bytes(b)
                } else {
                    f32::from_le_bytes(b)
                }
            })
            .collect()
    } else {
        data.chunks_exact(8)
            .map(|c| {
                let b = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
                (if big_endian { f64::from_be_bytes(b) } else { f64::from_le_bytes(b) }) as f32
            })
            .collect()
    };
    Ok((shape, values))
}

/// Reads the `.npy` file at `path`; see [`read_f32`].
pub fn read_f32_file(path: impl AsRef<Path>) -> Result<(Vec<usize>, Vec<f32>), NpyError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|cause| NpyError::Io { path: path.to_owned(), cause })?;
    read_f32(&bytes)
}

/// Encodes `data` (C order) as a `'<f4'` `.npy` file of the given `shape`, byte for byte what
/// `numpy.save` writes for the same float32 array (version 1.0; 2.0 only if the header would
/// not fit in 65535 bytes). An empty `shape` is a 0-d array holding one value.
///
/// # Panics
///
/// If the product of `shape` is not `data.len()`. Callers build the shape from the data they
/// hold, so a mismatch is a bug in the caller; use [`try_to_bytes_f32`] for a shape that comes
/// from outside.
pub fn to_bytes_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    match try_to_bytes_f32(shape, data) {
        Ok(bytes) => bytes,
        Err(e) => panic!("to_bytes_f32: {e}"),
    }
}

/// [`to_bytes_f32`] that reports a shape / data length mismatch as
/// [`NpyError::ShapeDataMismatch`] instead of panicking.
pub fn try_to_bytes_f32(shape: &[usize], data: &[f32]) -> Result<Vec<u8>, NpyError> {
    let need = shape.iter().fold(1u128, |acc, &d| acc.saturating_mul(d as u128));
    if need != data.len() as u128 {
        return Err(NpyError::ShapeDataMismatch { shape: shape.to_vec(), need, have: data.len() });
    }
    // Python's repr of a tuple: (), (3,), (2, 3).
    let shape_repr = match shape {
        [] => "()".to_owned(),
        [d] => format!("({d},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_repr}, }}");
    if let Some(first) = shape.first() {
        let digits = first.to_string().len();
        dict.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits)));
    }
    // numpy's _wrap_header: pad with spaces and a final '\n' so that prefix + header is a
    // multiple of ARRAY_ALIGN (a full 64 spaces when it already is).
    let wrap = |prefix_len: usize| {
        let hlen = dict.len() + 1;
        let pad = ARRAY_ALIGN - (prefix_len + hlen) % ARRAY_ALIGN;
        let mut h = dict.clone();
        h.push_str(&" ".repeat(pad));
        h.push('\n');
        h
    };
    let mut out;
    let h1 = wrap(10);
    if let Ok(len) = u16::try_from(h1.len()) {
        out = Vec::with_capacity(10 + h1.len() + data.len() * 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(h1.as_bytes());
    } else {
        let h2 = wrap(12);
        out = Vec::with_capacity(12 + h2.len() + data.len() * 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(h2.len() as u32).to_le_bytes());
        out.extend_from_slice(h2.as_bytes());
    }
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// The three fields of a `.npy` header.
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A value in the header's dict literal.
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
    /// Something else (a structured dtype's list, a nested dict): kept as its source text.
    Other(String),
}

/// Parses the header's Python dict literal (the subset numpy writes: string keys; string, bool,
/// tuple-of-int values; other values are kept as text for the error message).
fn parse_header(text: &str) -> Result<Header, NpyError> {
    let mut p = Parser { s: text.as_bytes(), i: 0 };
    p.ws();
    p.expect(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.ws();
        p.expect(b':')?;
        p.ws();
        let value = p.value()?;
        match (key.as_str(), value) {
            ("descr", Value::Str(s)) => descr = Some(s),
            ("descr", Value::Other(s)) => {
                return Err(NpyError::UnsupportedDtype(format!("{s} (a structured dtype)")));
            }
            ("fortran_order", Value::Bool(b)) => fortran = Some(b),
            ("shape", Value::Tuple(t)) => shape = Some(t),
            ("descr" | "fortran_order" | "shape", _) => {
                return Err(NpyError::BadHeader(format!("the value of '{key}' has the wrong type")));
            }
            (other, _) => {
                return Err(NpyError::BadHeader(format!("unexpected key '{other}'")));
            }
        }
        p.ws();
        if p.eat(b',') {
            continue;
        }
        p.ws();
        p.expect(b'}')?;
        break;
    }
    p.ws();
    if p.i != p.s.len() {
        return Err(NpyError::BadHeader("text after the closing '}'".into()));
    }
    let missing = |k: &str| NpyError::BadHeader(format!("the key '{k}' is missing"));
    Ok(Header {
        descr: descr.ok_or_else(|| missing("descr"))?,
        fortran_order: fortran.ok_or_else(|| missing("fortran_order"))?,
        shape: shape.ok_or_else(|| missing("shape"))?,
    })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), NpyError> {
        if self.eat(c) {
            Ok(())
        } else {
            let found = match self.peek() {
                Some(b) => format!("'{}'", char::from(b)),
                None => "the end of the header".to_owned(),
            };
            Err(NpyError::BadHeader(format!("expected '{}' at byte {} of the header, found {found}", char::from(c), self.i)))
        }
    }
    /// A quoted string without escapes (numpy's keys and dtype strings never need them).
    fn string(&mut self) -> Result<String, NpyError> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(NpyError::BadHeader(format!("expected a quoted string at byte {}", self.i))),
        };
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == b'\\' {
                return Err(NpyError::BadHeader("escaped characters in a header string".into()));
            }
            if c == quote {
                let s = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.i += 1;
                return Ok(s);
            }
            self.i += 1;
        }
        Err(NpyError::BadHeader("unterminated string".into()))
    }
    fn value(&mut self) -> Result<Value, NpyError> {
        match self.peek() {
            Some(b'\'' | b'"') => Ok(Value::Str(self.string()?)),
            Some(b'(') => {
                self.i += 1;
                let mut dims = Vec::new();
                loop {
                    self.ws();
                    if self.eat(b')') {
                        break;
                    }
                    dims.push(self.int()?);
                    self.ws();
                    if self.eat(b',') {
                        continue;
                    }
                    self.expect(b')')?;
                    break;
                }
                Ok(Value::Tuple(dims))
            }
            Some(b'0'..=b'9') => Ok(Value::Other(self.int()?.to_string())),
            Some(b'[' | b'{') => {
                let start = self.i;
                self.skip_balanced()?;
                Ok(Value::Other(String::from_utf8_lossy(&self.s[start..self.i]).into_owned()))
            }
            _ => {
                let rest = &self.s[self.i..];
                if rest.starts_with(b"True") {
                    self.i += 4;
                    Ok(Value::Bool(true))
                } else if rest.starts_with(b"False") {
                    self.i += 5;
                    Ok(Value::Bool(false))
                } else {
                    Err(NpyError::BadHeader(format!("unreadable value at byte {}", self.i)))
                }
            }
        }
    }
    /// A non-negative decimal integer (Python 2 files may append `L`).
    fn int(&mut self) -> Result<usize, NpyError> {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        if digits.is_empty() {
            return Err(NpyError::BadHeader(format!("expected a non-negative integer in the shape at byte {start}")));
        }
        let n = digits.parse::<usize>().map_err(|_| NpyError::BadHeader(format!("shape dimension {digits} is too large")))?;
        self.eat(b'L');
        Ok(n)
    }
    /// Skips a bracketed value, nested brackets and quoted strings included.
    fn skip_balanced(&mut self) -> Result<(), NpyError> {
        let mut depth = 0usize;
        while let Some(c) = self.peek() {
            match c {
                b'\'' | b'"' => {
                    self.string()?;
                    continue;
                }
                b'[' | b'(' | b'{' => depth += 1,
                b']' | b')' | b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        self.i += 1;
                        return Ok(());
                    }
                }
                _ => {}
            }
            self.i += 1;
        }
        Err(NpyError::BadHeader("unbalanced brackets".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a .npy file by hand: version bytes, header text (padded by the caller) and data.
    fn npy(major: u8, header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&[major, 0]);
        if major == 1 {
            v.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            v.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn writes_exactly_what_numpy_save_writes() {
        // numpy 2.4: np.save(f, np.array([[1, 2, 3], [4, 5, 6]], dtype='<f4')). The header is
        // the dict, 20 spare spaces (21 digits minus len('2')), padding to 64 bytes, '\n'.
        let mut want = b"\x93NUMPY\x01\x00\x76\x00".to_vec();
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        let header = format!("{dict}{}\n", " ".repeat(118 - dict.len() - 1));
        assert_eq!(header.len(), 0x76);
        want.extend_from_slice(header.as_bytes());
        want.extend_from_slice(&f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        let got = to_bytes_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(got, want);
        assert_eq!((got.len() - 24) % 64, 0, "data starts on a 64-byte boundary");
    }

    #[test]
    fn header_alignment_for_many_shapes() {
        let shapes: &[&[usize]] = &[&[], &[0], &[1], &[7], &[100_000, 2], &[3, 1, 4, 1, 5], &[1_234_567_890, 0]];
        for shape in shapes {
            let n: usize = shape.iter().product();
            let data = vec![0.5f32; n];
            let bytes = to_bytes_f32(shape, &data);
            let hlen = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
            assert_eq!((10 + hlen) % 64, 0, "{shape:?}");
            assert_eq!(bytes[10 + hlen - 1], b'\n');
            let (s, v) = read_f32(&bytes).unwrap();
            assert_eq!(&s, shape);
            assert_eq!(v, data);
        }
    }

    #[test]
    fn round_trip_preserves_bits() {
        let data = [0.0, -0.0, 1.5, -2.25e-38, f32::MAX, f32::MIN_POSITIVE / 8.0, f32::INFINITY, f32::NAN];
        let (shape, back) = read_f32(&to_bytes_f32(&[4, 2], &data)).unwrap();
        assert_eq!(shape, vec![4, 2]);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&data));
    }

    #[test]
    fn reads_f2_exactly() {
        let values = [1.0f32, -2.5, 65504.0, 1.0 / 16384.0, f32::INFINITY];
        let le: Vec<u8> = values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
        let h = "{'descr': '<f2', 'fortran_order': False, 'shape': (5,), }          \n";
        let (s, v) = read_f32(&npy(1, h, &le)).unwrap();
        assert_eq!((s, v), (vec![5], values.to_vec()));
        let be: Vec<u8> = values.iter().flat_map(|&v| half::f16::from_f32(v).to_be_bytes()).collect();
        let h = "{'descr': '>f2', 'fortran_order': False, 'shape': (5,), }          \n";
        assert_eq!(read_f32(&npy(1, h, &be)).unwrap().1, values.to_vec());
    }

    #[test]
    fn reads_f8_and_big_endian_and_v2_v3() {
        let f8: Vec<u8> = [1.0f64, -2.5, 1e300].iter().flat_map(|v| v.to_le_bytes()).collect();
        let h = "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }          \n";
        let (s, v) = read_f32(&npy(1, h, &f8)).unwrap();
        assert_eq!((s, v), (vec![3], vec![1.0, -2.5, f32::INFINITY]));

        let be: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let h = "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 2), }\n";
        assert_eq!(read_f32(&npy(2, h, &be)).unwrap(), (vec![1, 2], vec![1.0, 2.0]));

        // Version 3.0 (UTF-8 header), keys in another order, double quotes, no trailing comma.
        let h = "{\"shape\": (2,), \"fortran_order\": False, \"descr\": \"<f4\"}\n";
        assert_eq!(read_f32(&npy(3, h, &f32_bytes(&[3.0, 4.0]))).unwrap(), (vec![2], vec![3.0, 4.0]));

        // Python 2 long integers in the shape; 0-d array.
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (1L, 1L), }\n";
        assert_eq!(read_f32(&npy(1, h, &f32_bytes(&[7.0]))).unwrap(), (vec![1, 1], vec![7.0]));
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (), }\n";
        assert_eq!(read_f32(&npy(1, h, &f32_bytes(&[7.0]))).unwrap(), (vec![], vec![7.0]));
    }

    fn err(bytes: &[u8]) -> String {
        read_f32(bytes).unwrap_err().to_string()
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(err(b"PK\x03\x04 a zip").contains("magic"));
        assert!(err(b"").contains("magic"));
        assert!(err(b"\x93NUMPY").contains("truncated"));
        assert!(err(b"\x93NUMPY\x04\x00\x00\x00").contains("version 4.0"));
        assert!(err(b"\x93NUMPY\x01\x00\xff\x00{'descr'").contains("truncated"));

        let h = "{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }\n";
        let e = err(&npy(1, h, &[0; 8]));
        assert!(e.contains("unsupported .npy dtype '<i8'"), "{e}");
        let h = "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }\n";
        assert!(err(&npy(1, h, &[0; 4])).contains("structured"));
        let h = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }\n";
        assert!(err(&npy(1, h, &[0; 16])).contains("Fortran order"));

        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }\n";
        let e = err(&npy(1, h, &[0; 15]));
        assert!(e.contains("truncated") && e.contains("array data"), "{e}");
        let e = err(&npy(1, h, &[0; 17]));
        assert!(e.contains("needs 16 bytes") && e.contains("holds 17"), "{e}");

        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (4000000000, 4000000000, 4000000000), }\n";
        assert!(err(&npy(1, h, &[])).contains("more elements"));
        let h = "{'descr': '<f4', 'fortran_order': False}\n";
        assert!(err(&npy(1, h, &[])).contains("'shape' is missing"));
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }\n";
        assert!(err(&npy(1, h, &[])).contains("non-negative integer"));
        let h = "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,), }\n";
        assert!(err(&npy(1, h, &[0; 4])).contains("malformed"));
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } junk\n";
        assert!(err(&npy(1, h, &[0; 4])).contains("after the closing"));
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}\n";
        assert!(err(&npy(1, h, &[0; 4])).contains("unexpected key 'extra'"));
    }

    #[test]
    fn garbage_never_panics() {
        // Every prefix of a valid file, and a valid file with each byte flipped, must be an
        // error or a value, never a panic.
        let good = to_bytes_f32(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        for n in 0..good.len() {
            assert!(read_f32(&good[..n]).is_err());
        }
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0xA5;
            let _ = read_f32(&b);
        }
    }

    #[test]
    fn writer_rejects_shape_data_mismatch() {
        let e = try_to_bytes_f32(&[2, 3], &[0.0; 5]).unwrap_err().to_string();
        assert!(e.contains("[2, 3]") && e.contains("6 values") && e.contains("from 5"), "{e}");
        assert!(try_to_bytes_f32(&[usize::MAX, 3], &[]).is_err());
        assert!(std::panic::catch_unwind(|| to_bytes_f32(&[2], &[0.0])).is_err());
    }

    #[test]
    fn file_round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        std::fs::write(&path, to_bytes_f32(&[2], &[1.0, 2.0])).unwrap();
        assert_eq!(read_f32_file(&path).unwrap(), (vec![2], vec![1.0, 2.0]));
        let e = read_f32_file(dir.path().join("missing.npy")).unwrap_err().to_string();
        assert!(e.contains("could not read") && e.contains("missing.npy"), "{e}");
    }
}

//! Points as CSV text.

use std::fmt::Write as _;

// ---------------------------------------------------------------------------------------------

/// Points (flat, row-major, `dim` values per point) as CSV: a header (`x` / `x,y` / `x,y,z`, or
/// `x0,x1,...` beyond 3 dimensions), then one line per point. Each value is written in the
/// shortest form that parses back to the same f32 (scientific notation only for very large or
/// small magnitudes; `NaN`, `inf`, `-inf` as such).
///
/// # Panics
///
/// If `dim` is 0 or `points.len()` is not a multiple of `dim`: the caller derives both from the
/// same array, so a mismatch is a bug in the caller, not bad input.
pub fn points_csv(points: &[f32], dim: usize) -> Vec<u8> {
    assert!(dim > 0 && points.len() % dim == 0, "points_csv: {} values are not whole {dim}-dimensional points", points.len());
    let mut s = String::with_capacity(16 + points.len() * 12);
    match dim {
        1 => s.push('x'),
        2 => s.push_str("x,y"),
        3 => s.push_str("x,y,z"),
        _ => {
            let names: Vec<String> = (0..dim).map(|i| format!("x{i}")).collect();
            s.push_str(&names.join(","));
        }
    }
    s.push('\n');
    for p in points.chunks_exact(dim) {
        for (i, v) in p.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "{v:?}");
        }
        s.push('\n');
    }
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips_every_value() {
        let pts = [0.0f32, -0.0, 1.0, -2.5, 0.1, 1e-7, f32::MAX, f32::MIN_POSITIVE, 1e-45, 123456.79, f32::NAN, f32::NEG_INFINITY];
        let csv = String::from_utf8(points_csv(&pts, 2)).unwrap();
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some("x,y"));
        let back: Vec<f32> = lines.flat_map(|l| l.split(',').map(|v| v.parse::<f32>().unwrap()).collect::<Vec<_>>()).collect();
        assert_eq!(back.len(), pts.len());
        for (a, b) in pts.iter().zip(&back) {
            assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{a} -> {b}");
        }
        assert!(csv.contains("\n0.1,1e-7\n"), "{csv}");
        assert!(csv.ends_with("NaN,-inf\n"));
        assert_eq!(points_csv(&[], 2), b"x,y\n");
    }

    #[test]
    fn csv_headers_for_other_dimensions() {
        assert_eq!(points_csv(&[1.0, 2.0], 1), b"x\n1.0\n2.0\n");
        assert_eq!(points_csv(&[1.0, 2.0, 3.0], 3), b"x,y,z\n1.0,2.0,3.0\n");
        assert_eq!(points_csv(&[0.5; 4], 4), b"x0,x1,x2,x3\n0.5,0.5,0.5,0.5\n");
    }

    #[test]
    #[should_panic(expected = "not whole 2-dimensional points")]
    fn csv_with_a_ragged_array_is_a_caller_bug() {
        points_csv(&[1.0, 2.0, 3.0], 2);
    }
}

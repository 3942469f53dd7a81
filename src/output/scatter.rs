//! Point clouds as a scatter-plot PNG.

use super::png::encode_png;
use super::OutputError;

/// The region of the plane a scatter plot shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum View {
    /// Exactly these ranges (points outside are not drawn).
    Fixed { x: (f32, f32), y: (f32, f32) },
    /// A square around the finite points, with a 5% margin (equal scale on both axes).
    Fit,
}

/// How [`scatter_png_with`] draws.
#[derive(Clone, Debug, PartialEq)]
pub struct ScatterOptions {
    /// Width and height in pixels (16 to 4096; the canvas takes 12 bytes per pixel while drawing).
    pub size: u32,
    /// The region shown.
    pub view: View,
    /// Point radius in pixels (0.3 to 20).
    pub point_radius: f32,
    /// Opacity of one point (above 0, at most 1); overlapping points darken, showing density.
    pub alpha: f32,
}

impl Default for ScatterOptions {
    /// 800x800, the square [-6, 6]^2 (every reference data set fits), radius 1.5 px, alpha 0.3.
    fn default() -> Self {
        ScatterOptions { size: 800, view: View::Fixed { x: (-6.0, 6.0), y: (-6.0, 6.0) }, point_radius: 1.5, alpha: 0.3 }
    }
}

const BACKGROUND: [f32; 3] = [1.0, 1.0, 1.0];
const BOX_GRAY: [f32; 3] = [0.75, 0.75, 0.75];
const ZERO_GRAY: [f32; 3] = [0.88, 0.88, 0.88];
const INK: [f32; 3] = [0.09, 0.15, 0.32];

/// A scatter plot of points (flat, row-major, `dim` values per point) as PNG bytes, drawn with
/// [`ScatterOptions::default`]: 800x800, the square [-6, 6]^2. See [`scatter_png_with`].
pub fn scatter_png(points: &[f32], dim: usize, parameters: &str) -> Result<Vec<u8>, OutputError> {
    scatter_png_with(points, dim, &ScatterOptions::default(), parameters)
}

/// A scatter plot of points (flat, row-major, `dim` values per point; the first two coordinates
/// are plotted) as PNG bytes: white background, a light frame around the plotted region and
/// light lines at x = 0 and y = 0, and each point a small anti-aliased dark disk blended over
/// what is below it, so dense regions show darker. Non-finite points and points outside the
/// view are not drawn. `parameters` (how the points were made) goes in a `parameters` text
/// chunk, as in image PNGs ([`super::image_png`]); empty for none.
pub fn scatter_png_with(points: &[f32], dim: usize, opts: &ScatterOptions, parameters: &str) -> Result<Vec<u8>, OutputError> {
    if dim < 2 {
        return Err(OutputError::PlotDim { dim });
    }
    if points.len() % dim != 0 {
        return Err(OutputError::RaggedPoints { len: points.len(), dim });
    }
    if dim > 2 {
        let xy: Vec<f32> = points.chunks_exact(dim).flat_map(|p| [p[0], p[1]]).collect();
        return scatter_xy(&xy, opts, parameters);
    }
    scatter_xy(points, opts, parameters)
}

/// [`scatter_png_with`] for flat `x, y` pairs (even length).
fn scatter_xy(points: &[f32], opts: &ScatterOptions, parameters: &str) -> Result<Vec<u8>, OutputError> {
    let bad = |s: String| Err(OutputError::BadPlotOption(s));
    if !(16..=4096).contains(&opts.size) {
        return bad(format!("size {} is outside 16..=4096 pixels", opts.size));
    }
    if !(opts.point_radius >= 0.3 && opts.point_radius <= 20.0) {
        return bad(format!("point radius {} is outside 0.3..=20 pixels", opts.point_radius));
    }
    if !(opts.alpha > 0.0 && opts.alpha <= 1.0) {
        return bad(format!("alpha {} is outside (0, 1]", opts.alpha));
    }
    let ((x0, x1), (y0, y1)) = match opts.view {
        View::Fixed { x, y } => {
            for (axis, (lo, hi)) in [("x", x), ("y", y)] {
                if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                    return bad(format!("the {axis} range ({lo}, {hi}) must be finite with min < max"));
                }
            }
            ((f64::from(x.0), f64::from(x.1)), (f64::from(y.0), f64::from(y.1)))
        }
        View::Fit => fit_view(points),
    };

    let size = opts.size as usize;
    let mut px = vec![BACKGROUND; size * size];
    let margin = (size / 20).max(2);
    let (lo, hi) = (margin as f64, (size - margin) as f64); // plot area in pixel coordinates
    let to_px = |x: f64| lo + (x - x0) / (x1 - x0) * (hi - lo);
    let to_py = |y: f64| hi - (y - y0) / (y1 - y0) * (hi - lo);

    // Zero lines, then the frame, both one pixel wide.
    if x0 < 0.0 && 0.0 < x1 {
        let c = to_px(0.0).floor() as usize;
        for r in margin..=size - margin {
            px[r * size + c] = ZERO_GRAY;
        }
    }
    if y0 < 0.0 && 0.0 < y1 {
        let r = to_py(0.0).floor() as usize;
        for c in margin..=size - margin {
            px[r * size + c] = ZERO_GRAY;
        }
    }
    for i in margin..=size - margin {
        for (r, c) in [(margin, i), (size - margin, i), (i, margin), (i, size - margin)] {
            px[r * size + c] = BOX_GRAY;
        }
    }

    let radius = f64::from(opts.point_radius);
    let alpha = opts.alpha;
    for p in points.chunks_exact(2) {
        let (x, y) = (f64::from(p[0]), f64::from(p[1]));
        if !(x >= x0 && x <= x1 && y >= y0 && y <= y1) {
            continue; // outside the view, or NaN
        }
        let (cx, cy) = (to_px(x), to_py(y));
        let c_min = (cx - radius - 1.0).floor().max(lo) as usize;
        let c_max = (cx + radius + 1.0).ceil().min(hi) as usize;
        let r_min = (cy - radius - 1.0).floor().max(lo) as usize;
        let r_max = (cy + radius + 1.0).ceil().min(hi) as usize;
        for r in r_min..=r_max {
            for c in c_min..=c_max {
                // Pixel (r, c) covers [c, c+1) x [r, r+1); coverage from its centre's distance.
                let (dx, dy) = (c as f64 + 0.5 - cx, r as f64 + 0.5 - cy);
                let coverage = (radius + 0.5 - (dx * dx + dy * dy).sqrt()).clamp(0.0, 1.0) as f32;
                if coverage > 0.0 {
                    let a = alpha * coverage;
                    let dst = &mut px[r * size + c];
                    for (d, ink) in dst.iter_mut().zip(INK) {
                        *d = *d * (1.0 - a) + ink * a;
                    }
                }
            }
        }
    }

    let rgb: Vec<u8> = px.iter().flat_map(|p| p.map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)).collect();
    let text = (!parameters.is_empty()).then_some(("parameters", parameters));
    encode_png(opts.size, opts.size, png::ColorType::Rgb, &rgb, text)
}

/// A square view around the finite points with a 5% margin; [-1, 1]^2 around them if they
/// are all one point, and [-6, 6]^2 if there are none.
fn fit_view(points: &[f32]) -> ((f64, f64), (f64, f64)) {
    let mut b = [f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY];
    for p in points.chunks_exact(2) {
        if p[0].is_finite() && p[1].is_finite() {
            let (x, y) = (f64::from(p[0]), f64::from(p[1]));
            b = [b[0].min(x), b[1].max(x), b[2].min(y), b[3].max(y)];
        }
    }
    if b[0] > b[1] {
        return ((-6.0, 6.0), (-6.0, 6.0));
    }
    let (cx, cy) = ((b[0] + b[1]) / 2.0, (b[2] + b[3]) / 2.0);
    let half = (b[1] - b[0]).max(b[3] - b[2]) / 2.0 * 1.05;
    let half = if half > 0.0 { half } else { 1.0 };
    ((cx - half, cx + half), (cy - half, cy + half))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::test_util::decode;

    #[test]
    fn scatter_decodes_and_shows_density() {
        // A dense cluster at (2, 2) and one point at (-3, -3), default 800x800 view [-6, 6]^2.
        let mut pts = Vec::new();
        for i in 0..2000 {
            let (a, r) = (i as f32 * 0.1, 0.04 * i as f32 / 2000.0); // a filled spiral
            pts.extend_from_slice(&[2.0 + r * a.cos(), 2.0 + r * a.sin()]);
        }
        pts.extend_from_slice(&[-3.0, -3.0, f32::NAN, 0.0, 100.0, 100.0]);
        let (info, rgb, meta) = decode(&scatter_png(&pts, 2, "Steps: 1").unwrap());
        let text: Vec<_> = meta.uncompressed_latin1_text.iter().map(|t| (t.keyword.as_str(), t.text.as_str())).collect();
        assert_eq!(text, vec![("parameters", "Steps: 1")]);
        assert_eq!((info.width, info.height, info.color_type), (800, 800, png::ColorType::Rgb));
        let at = |x: f64, y: f64| {
            // Same mapping as the plot: margin 40, area 40..760.
            let c = (40.0 + (x + 6.0) / 12.0 * 720.0) as usize;
            let r = (760.0 - (y + 6.0) / 12.0 * 720.0) as usize;
            let i = (r * 800 + c) * 3;
            [rgb[i], rgb[i + 1], rgb[i + 2]]
        };
        assert_eq!(at(-5.0, 5.0), [255, 255, 255], "background is white");
        let dense = at(2.0, 2.0);
        let single = at(-3.0, -3.0);
        assert!(dense[0] < 40, "dense cluster is dark: {dense:?}");
        assert!(single[0] < 255 && single[0] > dense[0] + 60, "lone point is light: {single:?}");
        assert_eq!(&rgb[..3], &[255, 255, 255], "corner outside the frame is white");
        assert_eq!(rgb[(40 * 800 + 400) * 3], 191, "frame is light gray");
    }

    #[test]
    fn scatter_fit_view_and_bad_options() {
        let pts = [10.0f32, 10.0, 12.0, 11.0];
        let opts = ScatterOptions { size: 64, view: View::Fit, ..ScatterOptions::default() };
        let (info, rgb, _) = decode(&scatter_png_with(&pts, 2, &opts, "").unwrap());
        assert_eq!((info.width, info.height), (64, 64));
        assert!(rgb.iter().any(|&v| v < 200), "the points are drawn");
        // 3-D points plot their first two coordinates: the same picture.
        let pts3 = [10.0f32, 10.0, -99.0, 12.0, 11.0, 7.0];
        let (_, rgb3, _) = decode(&scatter_png_with(&pts3, 3, &opts, "").unwrap());
        assert_eq!(rgb3, rgb);
        // Degenerate and empty inputs still draw.
        assert!(scatter_png_with(&[1.0, 1.0], 2, &opts, "").is_ok());
        assert!(scatter_png_with(&[], 2, &opts, "").is_ok());
        assert!(scatter_png_with(&[f32::NAN, 1.0], 2, &opts, "").is_ok());

        let bad = |o: ScatterOptions| scatter_png_with(&pts, 2, &o, "").unwrap_err().to_string();
        let d = ScatterOptions::default();
        assert!(bad(ScatterOptions { size: 8, ..d.clone() }).contains("size 8"));
        assert!(bad(ScatterOptions { alpha: 0.0, ..d.clone() }).contains("alpha"));
        assert!(bad(ScatterOptions { point_radius: f32::NAN, ..d.clone() }).contains("radius"));
        let e = bad(ScatterOptions { view: View::Fixed { x: (1.0, 1.0), y: (0.0, 1.0) }, ..d.clone() });
        assert!(e.contains("x range"), "{e}");
        assert!(matches!(scatter_png(&[1.0, 2.0, 3.0], 2, ""), Err(OutputError::RaggedPoints { len: 3, dim: 2 })));
        let e = scatter_png(&[1.0, 2.0], 1, "").unwrap_err().to_string();
        assert!(e.starts_with("a scatter plot needs at least 2 coordinates per point, got 1"), "{e}");
        assert!(matches!(scatter_png(&[], 0, ""), Err(OutputError::PlotDim { dim: 0 })));
    }
}

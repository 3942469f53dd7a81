//! E-paper output: each image scaled (nearest neighbour) to a panel's resolution and dithered
//! (Floyd-Steinberg) to its few inks, written as an indexed PNG whose palette indices are the
//! panel driver's colour numbers, so a frame needs no Python glue (Pimoroni's `inky` takes a
//! palette image as it is). Panels and palettes are data in [`PANELS`]; add one there. This file
//! only computes pixels; it never talks to a panel (SPI drivers stay outside dualscale).
//!
//! Fit: `letterbox` keeps the whole image and fills the bands with the panel's first light ink
//! (white); `crop` fills the panel and cuts the overflow evenly from both sides. Colours are
//! matched in sRGB (no linearisation), as PIL's quantizer does, so results look like Inky's own.

use image::RgbImage;

/// One ink of a panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ink {
    pub name: &'static str,
    /// The colour written to the file for this index (what drivers map back to the ink).
    pub ideal: [u8; 3],
    /// What the ink looks like on the panel (measured by the panel's vendor); dithering aims at
    /// a blend of the two, see [`Panel::palette`].
    pub measured: [u8; 3],
}

const fn ink(name: &'static str, ideal: [u8; 3], measured: [u8; 3]) -> Ink {
    Ink { name, ideal, measured }
}

/// A panel model: its size in pixels (landscape) and inks, in the driver's index order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panel {
    pub id: &'static str,
    pub description: &'static str,
    pub width: u32,
    pub height: u32,
    pub inks: &'static [Ink],
}

/// The 7-colour ACeP inks of Pimoroni's Inky Impression 4" / 5.7" / 7.3" (UC8159 and AC073TC1A
/// drivers): `inky`'s DESATURATED (ideal) and SATURATED (measured) palettes, index order kept.
const ACEP7: &[Ink] = &[
    ink("black", [0, 0, 0], [57, 48, 57]),
    ink("white", [255, 255, 255], [255, 255, 255]),
    ink("green", [0, 255, 0], [58, 91, 70]),
    ink("blue", [0, 0, 255], [61, 59, 94]),
    ink("red", [255, 0, 0], [156, 72, 75]),
    ink("yellow", [255, 255, 0], [208, 190, 71]),
    ink("orange", [255, 140, 0], [177, 106, 73]),
];

/// The 6-colour Spectra 6 inks of the 2025 Inky Impression 7.3" (`inky`'s E673 driver).
const SPECTRA6: &[Ink] = &[
    ink("black", [0, 0, 0], [0, 0, 0]),
    ink("white", [255, 255, 255], [161, 164, 165]),
    ink("yellow", [255, 255, 0], [208, 190, 71]),
    ink("red", [255, 0, 0], [156, 72, 75]),
    ink("blue", [0, 0, 255], [61, 59, 94]),
    ink("green", [0, 255, 0], [58, 91, 70]),
];

const BLACK_WHITE_RED: &[Ink] =
    &[ink("white", [255, 255, 255], [255, 255, 255]), ink("black", [0, 0, 0], [0, 0, 0]), ink("red", [255, 0, 0], [200, 0, 0])];

const BLACK_WHITE: &[Ink] = &[ink("white", [255, 255, 255], [255, 255, 255]), ink("black", [0, 0, 0], [0, 0, 0])];

/// The panels `--epaper` knows.
pub const PANELS: &[Panel] = &[
    Panel { id: "inky-impression-4", description: "Pimoroni Inky Impression 4\", 7 colours", width: 640, height: 400, inks: ACEP7 },
    Panel { id: "inky-impression-5.7", description: "Pimoroni Inky Impression 5.7\", 7 colours", width: 600, height: 448, inks: ACEP7 },
    Panel {
        id: "inky-impression-7.3",
        description: "Pimoroni Inky Impression 7.3\" (2023), 7 colours",
        width: 800,
        height: 480,
        inks: ACEP7,
    },
    Panel {
        id: "inky-impression-7.3-spectra6",
        description: "Pimoroni Inky Impression 7.3\" (2025, Spectra 6), 6 colours",
        width: 800,
        height: 480,
        inks: SPECTRA6,
    },
    Panel { id: "inky-what-red", description: "Pimoroni Inky wHAT 4.2\", black/white/red", width: 400, height: 300, inks: BLACK_WHITE_RED },
    Panel { id: "waveshare-4.2-bwr", description: "Waveshare 4.2\" (B), black/white/red", width: 400, height: 300, inks: BLACK_WHITE_RED },
    Panel { id: "waveshare-7.5-bw", description: "Waveshare 7.5\" V2, black/white", width: 800, height: 480, inks: BLACK_WHITE },
];

/// Looks a panel up by id.
pub fn panel(id: &str) -> Option<&'static Panel> {
    PANELS.iter().find(|p| p.id == id)
}

/// The ids of every known panel, for error messages.
pub fn panel_ids() -> String {
    PANELS.iter().map(|p| p.id).collect::<Vec<_>>().join(", ")
}

/// How an image whose aspect differs from the panel's is fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fit {
    /// The whole image, centred, bands of white on two sides.
    #[default]
    Letterbox,
    /// The panel filled, the overflow cut evenly from two sides.
    Crop,
}

impl std::str::FromStr for Fit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "letterbox" => Ok(Self::Letterbox),
            "crop" => Ok(Self::Crop),
            _ => Err(format!("`{s}` is not a fit; use letterbox or crop")),
        }
    }
}

impl Panel {
    /// The colours dithering aims at: `measured * saturation + ideal * (1 - saturation)`, as
    /// `inky`'s `saturation` (0 = ideal colours, 1 = the panel's measured inks; 0.5 is inky's
    /// default).
    pub fn palette(&self, saturation: f32) -> Vec<[f32; 3]> {
        let s = saturation.clamp(0.0, 1.0);
        self.inks.iter().map(|ink| std::array::from_fn(|c| ink.measured[c] as f32 * s + ink.ideal[c] as f32 * (1.0 - s))).collect()
    }

    /// Scales `img` to the panel and dithers it; returns the palette index of every pixel,
    /// row-major, `width * height` of them.
    pub fn render(&self, img: &RgbImage, fit: Fit, saturation: f32) -> Vec<u8> {
        let scaled = scale_nearest(img, self.width, self.height, fit, self.inks[0].ideal);
        floyd_steinberg(&scaled, &self.palette(saturation))
    }

    /// [`Panel::render`] written as an indexed 8-bit PNG with the inks' ideal colours as its
    /// palette.
    pub fn render_png(&self, img: &RgbImage, fit: Fit, saturation: f32) -> Result<Vec<u8>, png::EncodingError> {
        let indices = self.render(img, fit, saturation);
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, self.width, self.height);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(self.inks.iter().flat_map(|i| i.ideal).collect::<Vec<u8>>());
        let mut w = enc.write_header()?;
        w.write_image_data(&indices)?;
        w.finish()?;
        Ok(out)
    }
}

/// Nearest-neighbour scaling of `img` to `width` x `height`, keeping its aspect: letterboxed
/// (bands of `background`) or cropped (centred), see [`Fit`].
pub fn scale_nearest(img: &RgbImage, width: u32, height: u32, fit: Fit, background: [u8; 3]) -> RgbImage {
    let (sw, sh) = (img.width() as u64, img.height() as u64);
    let (w, h) = (width as u64, height as u64);
    let mut out = RgbImage::from_pixel(width, height, image::Rgb(background));
    if sw == 0 || sh == 0 || w == 0 || h == 0 {
        return out;
    }
    // Scaled size: the image's aspect, touching the panel's edges on the limiting side.
    let width_limited = w * sh <= h * sw; // the panel is relatively narrower than the image
    let (dw, dh) = match (fit, width_limited) {
        (Fit::Letterbox, true) | (Fit::Crop, false) => (w, ((sh * w + sw / 2) / sw).max(1)),
        (Fit::Letterbox, false) | (Fit::Crop, true) => (((sw * h + sh / 2) / sh).max(1), h),
    };
    // Letterbox: (dw, dh) <= (w, h), placed at an offset; crop: >= (w, h), shifted back.
    let ox = (w as i64 - dw as i64) / 2;
    let oy = (h as i64 - dh as i64) / 2;
    for y in 0..h as i64 {
        let ys = y - oy;
        if ys < 0 || ys >= dh as i64 {
            continue;
        }
        let sy = (ys as u64 * sh / dh) as u32;
        for x in 0..w as i64 {
            let xs = x - ox;
            if xs < 0 || xs >= dw as i64 {
                continue;
            }
            let sx = (xs as u64 * sw / dw) as u32;
            out.put_pixel(x as u32, y as u32, *img.get_pixel(sx, sy));
        }
    }
    out
}

/// Floyd-Steinberg error diffusion (Floyd & Steinberg 1976: 7/16 right, 3/16 below left, 5/16
/// below, 1/16 below right), left to right on every row, to the nearest colour of `palette` by
/// squared distance in sRGB. Returns the palette index of each pixel.
pub fn floyd_steinberg(img: &RgbImage, palette: &[[f32; 3]]) -> Vec<u8> {
    assert!(!palette.is_empty() && palette.len() <= 256, "a palette has 1 to 256 colours");
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut buf: Vec<[f32; 3]> = img.pixels().map(|p| [p[0] as f32, p[1] as f32, p[2] as f32]).collect();
    let mut out = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            // Clamped, so a run of errors cannot push a value far outside what any ink shows.
            let old = buf[i].map(|v| v.clamp(0.0, 255.0));
            let (k, new) = nearest(palette, old);
            out[i] = k as u8;
            let err = [old[0] - new[0], old[1] - new[1], old[2] - new[2]];
            let mut spread = |xx: usize, yy: usize, f: f32| {
                let p = &mut buf[yy * w + xx];
                for c in 0..3 {
                    p[c] += err[c] * f;
                }
            };
            if x + 1 < w {
                spread(x + 1, y, 7.0 / 16.0);
            }
            if y + 1 < h {
                if x > 0 {
                    spread(x - 1, y + 1, 3.0 / 16.0);
                }
                spread(x, y + 1, 5.0 / 16.0);
                if x + 1 < w {
                    spread(x + 1, y + 1, 1.0 / 16.0);
                }
            }
        }
    }
    out
}

fn nearest(palette: &[[f32; 3]], c: [f32; 3]) -> (usize, [f32; 3]) {
    let mut best = (0, f32::INFINITY);
    for (k, p) in palette.iter().enumerate() {
        let d = (0..3).map(|i| (p[i] - c[i]) * (p[i] - c[i])).sum::<f32>();
        if d < best.1 {
            best = (k, d);
        }
    }
    (best.0, palette[best.0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_indexed(png_bytes: &[u8]) -> (u32, u32, Vec<u8>, Vec<u8>) {
        let dec = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let palette = reader.info().palette.as_ref().unwrap().to_vec();
        assert_eq!(info.color_type, png::ColorType::Indexed);
        buf.truncate(info.buffer_size());
        (info.width, info.height, palette, buf)
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128]))
    }

    #[test]
    fn panels_are_unique_and_sane() {
        for (i, p) in PANELS.iter().enumerate() {
            assert!(PANELS[..i].iter().all(|q| q.id != p.id), "duplicate {}", p.id);
            assert!(p.width >= p.height && p.inks.len() >= 2, "{}", p.id);
            assert_eq!(p.inks[..].iter().filter(|i| i.ideal == [255, 255, 255]).count(), 1);
        }
        assert_eq!(panel("inky-impression-5.7").unwrap().width, 600);
        assert!(panel("nope").is_none());
        assert!(panel_ids().contains("waveshare-4.2-bwr"));
    }

    #[test]
    fn output_has_the_panel_size_and_only_its_palette() {
        for id in ["inky-impression-5.7", "inky-impression-7.3", "waveshare-4.2-bwr", "waveshare-7.5-bw"] {
            let p = panel(id).unwrap();
            let png_bytes = p.render_png(&gradient(64, 64), Fit::Letterbox, 0.5).unwrap();
            let (w, h, palette, idx) = decode_indexed(&png_bytes);
            assert_eq!((w, h), (p.width, p.height), "{id}");
            let ideal: Vec<u8> = p.inks.iter().flat_map(|i| i.ideal).collect();
            assert_eq!(palette, ideal, "{id}");
            assert_eq!(idx.len(), (w * h) as usize);
            assert!(idx.iter().all(|&k| (k as usize) < p.inks.len()), "{id}");
            // A colourful gradient uses more than one ink.
            let mut used = idx.clone();
            used.sort();
            used.dedup();
            assert!(used.len() >= 2, "{id}: {used:?}");
        }
    }

    #[test]
    fn floyd_steinberg_on_flat_gray_keeps_the_mean() {
        let bw = panel("waveshare-7.5-bw").unwrap();
        for gray in [64u8, 128, 200] {
            let img = RgbImage::from_pixel(200, 100, image::Rgb([gray; 3]));
            let idx = floyd_steinberg(&img, &bw.palette(1.0));
            let mean = idx.iter().map(|&k| bw.inks[k as usize].ideal[0] as f64).sum::<f64>() / idx.len() as f64;
            assert!((mean - gray as f64).abs() < 1.5, "gray {gray}: mean {mean}");
            // Both inks interleave; it is a dither, not a threshold.
            assert!(idx.contains(&0) && idx.contains(&1));
        }
    }

    #[test]
    fn palette_colours_map_to_themselves() {
        let p = panel("inky-impression-5.7").unwrap();
        let img = RgbImage::from_fn(7, 1, |x, _| image::Rgb(p.inks[x as usize].ideal));
        assert_eq!(floyd_steinberg(&img, &p.palette(0.0)), [0, 1, 2, 3, 4, 5, 6]);
        // Saturation 1 aims at the measured inks: a measured colour maps to its ink too.
        let img = RgbImage::from_fn(7, 1, |x, _| image::Rgb(p.inks[x as usize].measured));
        assert_eq!(floyd_steinberg(&img, &p.palette(1.0)), [0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn nearest_upscale_letterboxes_and_crops() {
        // A 2x1 image (red, blue) onto 8x8: letterbox gives 8x4 in the middle, white bands.
        let img = RgbImage::from_fn(2, 1, |x, _| image::Rgb(if x == 0 { [255, 0, 0] } else { [0, 0, 255] }));
        let white = [255, 255, 255];
        let lb = scale_nearest(&img, 8, 8, Fit::Letterbox, white);
        assert_eq!((lb.width(), lb.height()), (8, 8));
        for y in 0..8 {
            for x in 0..8 {
                let want = if !(2..6).contains(&y) {
                    white
                } else if x < 4 {
                    [255, 0, 0]
                } else {
                    [0, 0, 255]
                };
                assert_eq!(lb.get_pixel(x, y).0, want, "({x},{y})");
            }
        }
        // Crop: scaled to 16x8, the middle 8 columns: half red, half blue, no band.
        let cr = scale_nearest(&img, 8, 8, Fit::Crop, white);
        for y in 0..8 {
            for x in 0..8 {
                let want = if x < 4 { [255, 0, 0] } else { [0, 0, 255] };
                assert_eq!(cr.get_pixel(x, y).0, want, "({x},{y})");
            }
        }
        // Integer upscale: every source pixel becomes a 3x3 block.
        let src = gradient(4, 3);
        let up = scale_nearest(&src, 12, 9, Fit::Letterbox, white);
        for y in 0..9 {
            for x in 0..12 {
                assert_eq!(up.get_pixel(x, y), src.get_pixel(x / 3, y / 3));
            }
        }
    }

    #[test]
    fn fit_parses() {
        assert_eq!("crop".parse::<Fit>(), Ok(Fit::Crop));
        assert_eq!("letterbox".parse::<Fit>(), Ok(Fit::Letterbox));
        assert!("stretch".parse::<Fit>().is_err());
    }
}

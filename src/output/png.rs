//! Images as 8-bit PNG, with the generation recipe in a `parameters` text chunk, optionally
//! enlarged for display (`--upscale`).

use image::imageops::FilterType;
use image::{ImageBuffer, Luma, Rgb, Rgba};

use super::OutputError;

/// Largest `--upscale` factor.
pub const MAX_UPSCALE: u32 = 32;

/// How an image is enlarged for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpscaleFilter {
    /// Each pixel becomes a K x K block: the model's pixels exactly, crisp pixel art.
    #[default]
    Nearest,
    /// Catmull-Rom cubic interpolation: smooth edges, no blocks (slight ringing at hard edges).
    Smooth,
}

impl UpscaleFilter {
    pub const ALL: [UpscaleFilter; 2] = [UpscaleFilter::Nearest, UpscaleFilter::Smooth];

    pub fn name(self) -> &'static str {
        match self {
            UpscaleFilter::Nearest => "nearest",
            UpscaleFilter::Smooth => "smooth",
        }
    }
}

/// An enlargement of every image by an integer factor (1: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upscale {
    pub factor: u32,
    pub filter: UpscaleFilter,
}

impl Default for Upscale {
    fn default() -> Self {
        Upscale { factor: 1, filter: UpscaleFilter::Nearest }
    }
}

/// [`image_png`] of the image enlarged `up.factor` times with `up.filter`.
pub fn image_png_upscaled(chw: &[f32], c: usize, h: usize, w: usize, parameters: &str, up: Upscale) -> Result<Vec<u8>, OutputError> {
    if up.factor <= 1 {
        return image_png(chw, c, h, w, parameters);
    }
    if up.factor > MAX_UPSCALE {
        return Err(OutputError::BadUpscale(up.factor));
    }
    let (color, hwc) = to_hwc(chw, c, h, w)?;
    let (nw, nh) = (w as u32 * up.factor, h as u32 * up.factor);
    let filter = match up.filter {
        UpscaleFilter::Nearest => FilterType::Nearest,
        UpscaleFilter::Smooth => FilterType::CatmullRom,
    };
    let bad = || OutputError::ImageSize { h, w };
    let (w32, h32) = (w as u32, h as u32);
    let big: Vec<u8> = match c {
        1 => image::imageops::resize(&ImageBuffer::<Luma<u8>, _>::from_raw(w32, h32, hwc).ok_or_else(bad)?, nw, nh, filter).into_raw(),
        3 => image::imageops::resize(&ImageBuffer::<Rgb<u8>, _>::from_raw(w32, h32, hwc).ok_or_else(bad)?, nw, nh, filter).into_raw(),
        _ => image::imageops::resize(&ImageBuffer::<Rgba<u8>, _>::from_raw(w32, h32, hwc).ok_or_else(bad)?, nw, nh, filter).into_raw(),
    };
    encode_png(nw, nh, color, &big, Some(("parameters", parameters)))
}

/// A model output image (`c` x `h` x `w`, channel-major, values in [-1, 1]) as 8-bit PNG bytes,
/// with the generation recipe in a text chunk with keyword `parameters`, as AUTOMATIC1111 and
/// its readers expect. Each value maps to `round((x + 1) / 2 * 255)` clamped to 0..=255 (NaN
/// becomes 0). `c` is 1 (gray), 3 (RGB) or 4 (RGBA). The chunk is `tEXt` when the text is
/// Latin-1, as PNG requires, and `iTXt` (UTF-8) otherwise, as Pillow does.
pub fn image_png(chw: &[f32], c: usize, h: usize, w: usize, parameters: &str) -> Result<Vec<u8>, OutputError> {
    let (color, hwc) = to_hwc(chw, c, h, w)?;
    encode_png(w as u32, h as u32, color, &hwc, Some(("parameters", parameters)))
}

/// The PNG color type and interleaved 8-bit pixels of a channel-major image in [-1, 1].
fn to_hwc(chw: &[f32], c: usize, h: usize, w: usize) -> Result<(png::ColorType, Vec<u8>), OutputError> {
    let color = match c {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        _ => return Err(OutputError::BadChannels(c)),
    };
    let max_side = 1usize << 16;
    if h == 0 || w == 0 || h > max_side || w > max_side {
        return Err(OutputError::ImageSize { h, w });
    }
    let need = c as u128 * h as u128 * w as u128;
    if need != chw.len() as u128 {
        return Err(OutputError::ImageLength { c, h, w, need, got: chw.len() });
    }
    let plane = h * w;
    let mut hwc = vec![0u8; chw.len()];
    for ch in 0..c {
        for (i, &x) in chw[ch * plane..(ch + 1) * plane].iter().enumerate() {
            // `as u8` saturates and maps NaN to 0.
            hwc[i * c + ch] = ((x + 1.0) * 0.5 * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok((color, hwc))
}

/// PNG bytes of 8-bit pixels `data` (row-major, interleaved), with an optional text chunk.
pub(super) fn encode_png(
    width: u32,
    height: u32,
    color: png::ColorType,
    data: &[u8],
    text: Option<(&str, &str)>,
) -> Result<Vec<u8>, OutputError> {
    let png_err = |e: png::EncodingError| OutputError::Png(e.to_string());
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        if let Some((keyword, value)) = text {
            let latin1 = value.chars().all(|ch| u32::from(ch) <= 0xFF);
            if latin1 {
                enc.add_text_chunk(keyword.to_owned(), value.to_owned()).map_err(png_err)?;
            } else {
                enc.add_itxt_chunk(keyword.to_owned(), value.to_owned()).map_err(png_err)?;
            }
        }
        let mut writer = enc.write_header().map_err(png_err)?;
        writer.write_image_data(data).map_err(png_err)?;
        writer.finish().map_err(png_err)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::test_util::{decode, entries};
    use crate::output::{expand_name, write_atomic, NameVars};
    use std::time::UNIX_EPOCH;

    #[test]
    fn image_png_maps_values_and_embeds_parameters() {
        let params = "a photo of a moon\nSteps: 20, Sampler: DDIM, Seed: 42, Model: moons-dual";
        // 3 x 2 x 2 (C x H x W), channel-major.
        let chw = [-1.0, 0.0, 1.0, 2.0, /* G */ -2.0, 0.5, -0.5, f32::NAN, /* B */ 0.0, 0.0, 0.0, 0.0];
        let bytes = image_png(&chw, 3, 2, 2, params).unwrap();
        let (info, px, meta) = decode(&bytes);
        assert_eq!((info.width, info.height, info.color_type), (2, 2, png::ColorType::Rgb));
        assert_eq!(px, vec![0, 0, 128, 128, 191, 128, 255, 64, 128, 255, 0, 128]);
        let text: Vec<_> = meta.uncompressed_latin1_text.iter().map(|t| (t.keyword.as_str(), t.text.as_str())).collect();
        assert_eq!(text, vec![("parameters", params)]);

        let (info, px, _) = decode(&image_png(&[-1.0, 1.0, 0.0], 1, 1, 3, "").unwrap());
        assert_eq!((info.width, info.height, info.color_type), (3, 1, png::ColorType::Grayscale));
        assert_eq!(px, vec![0, 255, 128]);
        let rgba = vec![1.0f32; 4 * 3 * 5];
        let (info, px, _) = decode(&image_png(&rgba, 4, 3, 5, "x").unwrap());
        assert_eq!((info.width, info.height, info.color_type), (5, 3, png::ColorType::Rgba));
        assert!(px.iter().all(|&v| v == 255));
    }

    #[test]
    fn image_png_non_latin1_parameters_go_to_itxt() {
        let params = "prompt: 月 🌙";
        let (_, _, meta) = decode(&image_png(&[0.0], 1, 1, 1, params).unwrap());
        assert!(meta.uncompressed_latin1_text.is_empty());
        let chunk = meta.utf8_text.iter().find(|t| t.keyword == "parameters").unwrap();
        assert_eq!(chunk.get_text().unwrap(), params);
    }

    #[test]
    fn image_png_rejects_bad_shapes() {
        assert!(matches!(image_png(&[0.0; 4], 2, 1, 2, ""), Err(OutputError::BadChannels(2))));
        let e = image_png(&[0.0; 11], 3, 2, 2, "").unwrap_err().to_string();
        assert_eq!(e, "an image of 3x2x2 (CxHxW) needs 12 values but 11 were given; pass the model output for one image");
        assert!(matches!(image_png(&[], 3, 0, 2, ""), Err(OutputError::ImageSize { .. })));
        assert!(matches!(image_png(&[], 1, usize::MAX, usize::MAX, ""), Err(OutputError::ImageSize { .. })));
    }

    #[test]
    fn outputs_written_atomically_decode() {
        let dir = tempfile::tempdir().unwrap();
        let name =
            expand_name("{model}-{index:03}.png", &NameVars { model: "moons-dual".into(), seed: 3, index: 7, time: UNIX_EPOCH }).unwrap();
        let path = dir.path().join(&name);
        write_atomic(&path, &image_png(&[0.0; 12], 3, 2, 2, "p").unwrap(), false).unwrap();
        let (info, _, _) = decode(&std::fs::read(&path).unwrap());
        assert_eq!((info.width, info.height), (2, 2));
        assert_eq!(entries(dir.path()), vec!["moons-dual-007.png"]);
    }

    #[test]
    fn upscaling_keeps_pixels_and_the_recipe() {
        // A 2x2 RGB image: red, green / blue, white.
        let chw = [1.0, -1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, -1.0, 1.0, 1.0];
        let up = Upscale { factor: 4, filter: UpscaleFilter::Nearest };
        let (info, px, meta) = decode(&image_png_upscaled(&chw, 3, 2, 2, "Steps: 4", up).unwrap());
        assert_eq!((info.width, info.height), (8, 8));
        let at = |x: usize, y: usize| &px[(y * 8 + x) * 3..(y * 8 + x) * 3 + 3];
        assert_eq!(at(0, 0), [255, 0, 0]);
        assert_eq!(at(3, 3), [255, 0, 0]);
        assert_eq!(at(4, 0), [0, 255, 0]);
        assert_eq!(at(0, 7), [0, 0, 255]);
        assert_eq!(at(7, 7), [255, 255, 255]);
        assert_eq!(meta.uncompressed_latin1_text[0].text, "Steps: 4");
        // Smooth: same size, blended values between the blocks, corners keep their colour.
        let smooth = Upscale { factor: 4, filter: UpscaleFilter::Smooth };
        let (info, px, _) = decode(&image_png_upscaled(&chw, 3, 2, 2, "", smooth).unwrap());
        assert_eq!((info.width, info.height), (8, 8));
        assert!(px[3 * 3] > 0 && px[3 * 3] < 255, "no blend at the edge: {:?}", &px[..24]);
        // Factor 1 is the plain image; factors beyond the limit are errors.
        assert_eq!(image_png_upscaled(&chw, 3, 2, 2, "p", Upscale::default()).unwrap(), image_png(&chw, 3, 2, 2, "p").unwrap());
        let huge = Upscale { factor: 33, filter: UpscaleFilter::Nearest };
        assert!(matches!(image_png_upscaled(&chw, 3, 2, 2, "p", huge), Err(OutputError::BadUpscale(33))));
    }
}

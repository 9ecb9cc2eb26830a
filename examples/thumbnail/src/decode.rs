//! Decoding with the least work: JPEG is downscaled inside the decoder
//! (libjpeg-turbo's scaled IDCT, through the `mozjpeg` crate, built from
//! source with the C compiler), other formats go through the `image` crate.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use mozjpeg::{ColorSpace, Marker};

use crate::{ThumbnailError, fit_within};

/// A decoded image and the orientation it should be shown in.
pub struct Decoded {
    pub image: DynamicImage,
    pub orientation: Orientation,
}

pub fn decode(bytes: &[u8], max_edge: u32) -> Result<Decoded, ThumbnailError> {
    let format = image::guess_format(bytes).map_err(|_| {
        let head: String = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        ThumbnailError::Unsupported(format!(" (first bytes {head})"))
    })?;
    if format == ImageFormat::Jpeg
        && let Some(decoded) = decode_jpeg_scaled(bytes, max_edge)?
    {
        return Ok(decoded);
    }
    decode_generic(bytes, format)
}

fn decode_generic(bytes: &[u8], format: ImageFormat) -> Result<Decoded, ThumbnailError> {
    let name = format_name(format);
    let corrupt = |e: image::ImageError| match e {
        image::ImageError::Unsupported(u) => ThumbnailError::Unsupported(format!(": {u}")),
        other => ThumbnailError::Corrupt {
            format: name,
            reason: other.to_string(),
        },
    };
    let mut reader = ImageReader::new(Cursor::new(bytes));
    reader.set_format(format);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    Ok(Decoded { image, orientation })
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::Gif => "GIF",
        ImageFormat::WebP => "WebP",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Tiff => "TIFF",
        _ => "image",
    }
}

/// Decodes a JPEG straight to (about) thumbnail size: libjpeg's IDCT
/// produces `n/8` of the pixels, with `n` the smallest that still covers the
/// thumbnail. `Ok(None)` for colour spaces this path does not convert (CMYK,
/// YCCK): the generic decoder takes those.
fn decode_jpeg_scaled(bytes: &[u8], max_edge: u32) -> Result<Option<Decoded>, ThumbnailError> {
    let run = || -> std::io::Result<Option<(DynamicImage, Option<Vec<u8>>)>> {
        let mut d = mozjpeg::Decompress::builder()
            .with_markers(&[Marker::APP(1)])
            .from_mem(bytes)?;
        let w = u32::try_from(d.width()).unwrap_or(u32::MAX);
        let h = u32::try_from(d.height()).unwrap_or(u32::MAX);
        let (tw, th) = fit_within(w, h, max_edge);
        let n = (1u32..=8)
            .find(|n| (w * n).div_ceil(8) >= tw && (h * n).div_ceil(8) >= th)
            .unwrap_or(8);
        d.scale(u8::try_from(n).unwrap_or(8));
        let exif = d
            .markers()
            .find(|m| m.marker == Marker::APP(1) && m.data.starts_with(b"Exif\0\0"))
            .map(|m| m.data[6..].to_vec());
        let gray = match d.color_space() {
            ColorSpace::JCS_GRAYSCALE => true,
            ColorSpace::JCS_YCbCr | ColorSpace::JCS_RGB => false,
            _ => return Ok(None),
        };
        let mut started = if gray { d.grayscale()? } else { d.rgb()? };
        let ow = u32::try_from(started.width()).unwrap_or(u32::MAX);
        let oh = u32::try_from(started.height()).unwrap_or(u32::MAX);
        let pixels: Vec<u8> = started.read_scanlines()?;
        started.finish()?;
        let image = if gray {
            GrayImage::from_raw(ow, oh, pixels).map(DynamicImage::ImageLuma8)
        } else {
            RgbImage::from_raw(ow, oh, pixels).map(DynamicImage::ImageRgb8)
        };
        Ok(image.map(|i| (i, exif)))
    };
    let corrupt = |reason: String| ThumbnailError::Corrupt {
        format: "JPEG",
        reason,
    };
    // libjpeg reports fatal errors by unwinding out of the decoder.
    match std::panic::catch_unwind(run) {
        Ok(Ok(Some((image, exif)))) => Ok(Some(Decoded {
            image,
            orientation: exif
                .as_deref()
                .and_then(Orientation::from_exif_chunk)
                .unwrap_or(Orientation::NoTransforms),
        })),
        Ok(Ok(None)) => Ok(None),
        Ok(Err(e)) => Err(corrupt(e.to_string())),
        Err(panic) => Err(corrupt(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "decoder failed".into()),
        )),
    }
}

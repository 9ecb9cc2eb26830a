//! Decoding with the least work: JPEG is downscaled inside the decoder
//! (the IDCT produces 1/2, 1/4 or 1/8 of the pixels), other formats go
//! through the `image` crate.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

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

/// `Ok(None)` for JPEG colour types the scaled path does not handle (CMYK,
/// 16-bit): the generic decoder takes those.
fn decode_jpeg_scaled(bytes: &[u8], max_edge: u32) -> Result<Option<Decoded>, ThumbnailError> {
    let corrupt = |e: jpeg_decoder::Error| ThumbnailError::Corrupt {
        format: "JPEG",
        reason: e.to_string(),
    };
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.read_info().map_err(corrupt)?;
    let Some(info) = decoder.info() else {
        return Err(ThumbnailError::Corrupt {
            format: "JPEG",
            reason: "no frame header".into(),
        });
    };
    let (tw, th) = fit_within(u32::from(info.width), u32::from(info.height), max_edge);
    // The decoder picks the smallest DCT scale whose result is still at
    // least this large; the Lanczos pass then does the rest.
    decoder
        .scale(
            u16::try_from(tw).unwrap_or(u16::MAX),
            u16::try_from(th).unwrap_or(u16::MAX),
        )
        .map_err(corrupt)?;
    let pixels = decoder.decode().map_err(corrupt)?;
    let Some(info) = decoder.info() else {
        return Ok(None);
    };
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let short = || ThumbnailError::Corrupt {
        format: "JPEG",
        reason: format!("decoder returned too few pixels for {w}x{h}"),
    };
    let image = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => {
            DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, pixels).ok_or_else(short)?)
        }
        jpeg_decoder::PixelFormat::L8 => {
            DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, pixels).ok_or_else(short)?)
        }
        jpeg_decoder::PixelFormat::L16 | jpeg_decoder::PixelFormat::CMYK32 => return Ok(None),
    };
    let orientation = decoder
        .exif_data()
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    Ok(Some(Decoded { image, orientation }))
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

//! Decoding with the least work: JPEG is downscaled inside the decoder
//! (libjpeg-turbo's scaled IDCT, through the `mozjpeg` crate, built from
//! source with the C compiler), other formats go through the `image` crate.
//!
//! Memory is a budget: what an image will take to decode is worked out
//! from its header (dimensions, colour type, JPEG layout) and checked
//! against the invocation's share of the memory limit before any pixel is
//! allocated. The estimates are upper bounds of the decoders' working
//! memory, not of the file size: a 60-byte PNG may declare 4 billion
//! pixels.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{
    ColorType, DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage,
};
use mozjpeg::{ColorSpace, Marker};

use crate::{ThumbnailError, fit_within, icc, jpeg_layout, scans};

const MIB: u64 = 1024 * 1024;

/// Refuses an image whose decoding would need more than `budget` bytes.
fn within(
    format: &'static str,
    (width, height): (u32, u32),
    needed: u64,
    budget: u64,
) -> Result<(), ThumbnailError> {
    if needed <= budget {
        return Ok(());
    }
    Err(ThumbnailError::TooLarge {
        format,
        width,
        height,
        needed_mib: needed.div_ceil(MIB),
        budget_mib: budget / MIB,
    })
}

/// Bytes that making an 8-bit RGB or grey image of `color` takes beside
/// the decoded one (see `flatten`).
fn flatten_bytes(color: ColorType, pixels: u64) -> u64 {
    match color {
        ColorType::L8 | ColorType::Rgb8 => 0,
        ColorType::L16 => pixels,
        // into_rgba8 reuses an RGBA8 buffer; others are converted first.
        ColorType::Rgba8 => 3 * pixels,
        c if c.has_alpha() => 7 * pixels,
        _ => 3 * pixels,
    }
}

/// A decoded image and the orientation it should be shown in.
pub struct Decoded {
    pub image: DynamicImage,
    pub orientation: Orientation,
    /// The source's ICC colour profile, if it has a well-formed one.
    pub icc: Option<Vec<u8>>,
}

/// Decodes `bytes` to about `max_edge` pixels a side, within `budget`
/// bytes of working memory.
pub fn decode(bytes: &[u8], max_edge: u32, budget: u64) -> Result<Decoded, ThumbnailError> {
    let format = image::guess_format(bytes).map_err(|_| {
        let head: String = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        ThumbnailError::Unsupported(format!(" (first bytes {head})"))
    })?;
    let mut extra = 0;
    if format == ImageFormat::Jpeg {
        let corrupt = |reason: String| ThumbnailError::Corrupt {
            format: "JPEG",
            reason,
        };
        let layout = jpeg_layout::read(bytes).map_err(corrupt)?;
        if !layout.complete {
            return Err(corrupt(
                "the file ends before the end-of-image marker (truncated)".into(),
            ));
        }
        match decode_jpeg_scaled(bytes, max_edge, layout, budget)? {
            Scaled::Done(decoded) => return Ok(decoded),
            Scaled::Unconverted { coefficients } => extra = coefficients,
        }
    }
    decode_generic(bytes, format, extra, budget)
}

/// Decodes with the `image` crate. `extra`: working memory of the format's
/// decoder beyond the decoded image (JPEG's coefficients).
fn decode_generic(
    bytes: &[u8],
    format: ImageFormat,
    extra: u64,
    budget: u64,
) -> Result<Decoded, ThumbnailError> {
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
    // The decoders that honour it also bound their own allocations.
    let mut limits = Limits::default();
    limits.max_alloc = Some(budget);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let dimensions = decoder.dimensions();
    let pixels = u64::from(dimensions.0) * u64::from(dimensions.1);
    // The decoded image, as much again for the decoder's own buffers (a
    // lossless WebP's ARGB words, a GIF's frame, a TIFF strip), the
    // conversion to 8-bit RGB, and what the format needs beside.
    let needed = decoder
        .total_bytes()
        .saturating_mul(2)
        .saturating_add(flatten_bytes(decoder.color_type(), pixels))
        .saturating_add(extra);
    within(name, dimensions, needed, budget)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    // A profile that cannot be read is left behind, not an error.
    let icc = decoder.icc_profile().ok().flatten();
    let image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    Ok(Decoded {
        image,
        orientation,
        icc,
    })
}

/// What [`decode_jpeg_scaled`] did.
enum Scaled {
    Done(Decoded),
    /// A colour space this path does not convert (CMYK, YCCK); decoding it
    /// needs `coefficients` bytes beside the image.
    Unconverted {
        coefficients: u64,
    },
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
/// produces `n/8` of the pixels, with `n` the smallest of 1, 2, 4 and 8
/// that still covers the thumbnail; at `n = 1` a progressive file is decoded without the scans
/// that 1/8 scale does not read (see [`scans`]). Colour spaces this path does not convert (CMYK, YCCK) are
/// left to the generic decoder.
fn decode_jpeg_scaled(
    bytes: &[u8],
    max_edge: u32,
    layout: jpeg_layout::Layout,
    budget: u64,
) -> Result<Scaled, ThumbnailError> {
    let run = || -> std::io::Result<Result<Scaled, ThumbnailError>> {
        // A copy without the scans the decoder would not use, when it has
        // any (declared first: the decoder borrows it).
        let lean: Vec<u8>;
        let mut d = mozjpeg::Decompress::builder()
            .with_markers(&[Marker::APP(1), Marker::APP(2)])
            .from_mem(bytes)?;
        let w = u32::try_from(d.width()).unwrap_or(u32::MAX);
        let h = u32::try_from(d.height()).unwrap_or(u32::MAX);
        // Every coefficient of a buffered image: 64 16-bit values a block.
        let coefficients = if layout.buffers_whole_image() {
            let blocks: u64 = d
                .components()
                .iter()
                .map(|c| u64::from(c.width_in_blocks) * u64::from(c.height_in_blocks))
                .sum();
            let bound = u64::from(w.div_ceil(8)) * u64::from(h.div_ceil(8)) * 4;
            (if blocks == 0 { bound } else { blocks }) * 128
        } else {
            0
        };
        let (tw, th) = fit_within(w, h, max_edge);
        // Halvings only: the 3/8, 5/8, 6/8 and 7/8 IDCTs blur and alias
        // (2-3 dB further from a full decode's area average than a full
        // decode and a Lanczos3 resize, measured on photographs).
        let n = [1u32, 2, 4]
            .into_iter()
            .find(|n| (w * n).div_ceil(8) >= tw && (h * n).div_ceil(8) >= th)
            .unwrap_or(8);
        let exif = d
            .markers()
            .find(|m| m.marker == Marker::APP(1) && m.data.starts_with(b"Exif\0\0"))
            .map(|m| m.data[6..].to_vec());
        let icc = icc::from_app2(
            d.markers()
                .filter(|m| m.marker == Marker::APP(2))
                .map(|m| m.data),
        );
        let gray = match d.color_space() {
            ColorSpace::JCS_GRAYSCALE => true,
            ColorSpace::JCS_YCbCr | ColorSpace::JCS_RGB => false,
            _ => return Ok(Ok(Scaled::Unconverted { coefficients })),
        };
        // The scaled output, a few rows of full-width working buffers, the
        // coefficients when the layout needs them all, and the markers kept
        // (by libjpeg, then the EXIF and profile copies).
        let channels: u64 = if gray { 1 } else { 3 };
        let output = u64::from((w * n).div_ceil(8)) * u64::from((h * n).div_ceil(8)) * channels;
        let rows = u64::from(w) * u64::from(layout.frame_components) * 64;
        let markers: u64 = d.markers().map(|m| m.data.len() as u64).sum::<u64>()
            + exif.as_ref().map_or(0, |e| e.len() as u64)
            + icc.as_ref().map_or(0, |p| p.len() as u64);
        let needed = output + rows + coefficients + markers;
        if let Err(e) = within("JPEG", (w, h), needed, budget) {
            return Ok(Err(e));
        }
        // At 1/8 a full-resolution component's pixel is its block's DC: a
        // progressive file is decoded from a copy without the other scans
        // (at most the file's size again), when the budget has room for it.
        if n == 1
            && layout.progressive
            && needed.saturating_add(bytes.len() as u64) <= budget
            && let Some(stripped) = scans::without_full_resolution_ac(bytes)
        {
            lean = stripped;
            d = mozjpeg::Decompress::new_mem(&lean)?;
        }
        d.scale(u8::try_from(n).unwrap_or(8));
        // Smoothing would guess the coefficients of scans left out; a
        // complete file has every coefficient and is not smoothed anyway.
        d.do_block_smoothing(false);
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
        let Some(image) = image else {
            return Err(std::io::Error::other(format!(
                "decoder returned too few pixels for {ow}x{oh}"
            )));
        };
        Ok(Ok(Scaled::Done(Decoded {
            image,
            orientation: exif
                .as_deref()
                .and_then(Orientation::from_exif_chunk)
                .unwrap_or(Orientation::NoTransforms),
            icc,
        })))
    };
    let corrupt = |reason: String| ThumbnailError::Corrupt {
        format: "JPEG",
        reason,
    };
    // libjpeg reports fatal errors by unwinding out of the decoder.
    match std::panic::catch_unwind(run) {
        Ok(Ok(result)) => result,
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

//! Generates sample images: procedural "photos" of any size, a transparent
//! PNG, a GIF, a JPEG whose EXIF says "rotate 90°", and one corrupt file.
//! Used for the committed sample set, the tests and the benchmarks.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::{ImageEncoder, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

use crate::{Chroma, encode};

/// A colourful deterministic picture: gradients, rings and a grid, varied
/// by `seed`, with enough detail that JPEG sizes are realistic.
pub fn picture(width: u32, height: u32, seed: u32) -> RgbImage {
    let (fw, fh) = (width.max(1) as f32, height.max(1) as f32);
    let s = seed as f32;
    let (cx, cy) = (fw * (0.3 + 0.4 * ((s * 0.37).sin() * 0.5 + 0.5)), fh * 0.5);
    RgbImage::from_fn(width, height, |x, y| {
        let (xf, yf) = (x as f32, y as f32);
        let d = ((xf - cx).powi(2) + (yf - cy).powi(2)).sqrt() / fw.max(fh);
        let ring = ((d * 40.0 + s).sin() * 0.5 + 0.5) * 90.0;
        let grid = if (x / 64 + y / 64 + seed).is_multiple_of(2) {
            20.0
        } else {
            0.0
        };
        let r = (xf / fw) * 200.0 + ring * 0.5 + grid;
        let g = (yf / fh) * 180.0 + ring * 0.3;
        let b = ((s * 29.0) % 255.0) * 0.4 + ring + grid;
        let noise = (x.wrapping_mul(7919) ^ y.wrapping_mul(104_729) ^ seed) % 12;
        Rgb([
            (r + noise as f32).min(255.0) as u8,
            (g + noise as f32).min(255.0) as u8,
            (b + noise as f32).min(255.0) as u8,
        ])
    })
}

/// Encodes `image` as JPEG at `quality`.
pub fn jpeg(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    // Encoding into a Vec of a valid RGB buffer cannot fail.
    let _ = JpegEncoder::new_with_quality(Cursor::new(&mut out), quality).write_image(
        image.as_raw(),
        image.width(),
        image.height(),
        image::ExtendedColorType::Rgb8,
    );
    out
}

/// Encodes `image` (or its grey version) as a progressive JPEG at
/// `quality`, with libjpeg's standard progression (spectral selection and
/// successive approximation). Empty if the encoder refuses the image.
pub fn progressive_jpeg(image: &RgbImage, quality: u8, chroma: Chroma, gray: bool) -> Vec<u8> {
    let luma;
    let pixels = if gray {
        luma = image::DynamicImage::ImageRgb8(image.clone()).to_luma8();
        luma.as_raw()
    } else {
        image.as_raw()
    };
    let pixels = encode::Pixels {
        bytes: pixels,
        width: image.width(),
        height: image.height(),
        gray,
        icc: None,
    };
    encode::jpeg(&pixels, quality, chroma, true).unwrap_or_default()
}

/// `jpeg` with `profile` embedded as an ICC profile (APP2 segments after
/// the start of image).
pub fn with_icc_profile(jpeg: &[u8], profile: &[u8]) -> Vec<u8> {
    let chunks: Vec<&[u8]> = profile.chunks(65_519).collect();
    let mut out = jpeg[..2.min(jpeg.len())].to_vec();
    for (i, chunk) in chunks.iter().enumerate() {
        let len = u16::try_from(chunk.len() + 16).unwrap_or(u16::MAX);
        out.extend_from_slice(&[0xFF, 0xE2]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(crate::icc::TAG);
        out.extend([
            u8::try_from(i + 1).unwrap_or(u8::MAX),
            u8::try_from(chunks.len()).unwrap_or(u8::MAX),
        ]);
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&jpeg[2.min(jpeg.len())..]);
    out
}

/// A blob of `len` bytes (at least 20) shaped like an ICC profile of
/// colour space `space` (`b"RGB "`, `b"GRAY"`, `b"CMYK"`): enough for the
/// thumbnailer to carry it, not a usable profile.
pub fn icc_profile(space: &[u8; 4], len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len.max(20)).map(|i| (i % 251) as u8).collect();
    let size = u32::try_from(p.len()).unwrap_or(u32::MAX);
    p[..4].copy_from_slice(&size.to_be_bytes());
    p[12..16].copy_from_slice(b"mntr");
    p[16..20].copy_from_slice(space);
    p
}

/// Inserts an EXIF APP1 segment carrying `orientation` (1-8) after the SOI
/// marker of `jpeg`.
pub fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\0\x2a\0\0\0\x08"); // big-endian TIFF, IFD0 at 8
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let len = u16::try_from(app1.len() + 2).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(jpeg.len() + app1.len() + 4);
    out.extend_from_slice(&jpeg[..2.min(jpeg.len())]);
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2.min(jpeg.len())..]);
    out
}

/// Bytes that start like a JPEG and then are garbage.
pub fn corrupt_jpeg() -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
    out.extend(b"JFIF\0".iter());
    out.extend((0..2048u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    out
}

/// Writes a sample set into `dir`: `photos` JPEGs of `width` x `height`
/// (every third one in portrait), plus `extras` when asked: a transparent
/// PNG, a GIF, an EXIF-rotated JPEG and `corrupt.jpg`. Returns the files.
pub fn write_set(
    dir: &Path,
    photos: usize,
    width: u32,
    height: u32,
    extras: bool,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let mut write = |name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, bytes)?;
        written.push(path);
        Ok(())
    };
    for i in 0..photos {
        let (w, h) = if i % 3 == 2 {
            (height, width)
        } else {
            (width, height)
        };
        let seed = u32::try_from(i).unwrap_or(0);
        write(
            &format!("photo-{i:04}.jpg"),
            &jpeg(&picture(w, h, seed), 85),
        )?;
    }
    if extras {
        let logo = RgbaImage::from_fn(320, 320, |x, y| {
            let d = ((x as f32 - 160.0).powi(2) + (y as f32 - 160.0).powi(2)).sqrt();
            let a = if d < 140.0 { 255 } else { 0 };
            Rgba([30, (x % 256) as u8, 200, a])
        });
        let mut png = Vec::new();
        image::DynamicImage::ImageRgba8(logo)
            .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .map_err(std::io::Error::other)?;
        write("logo-transparent.png", &png)?;
        let mut gif = Vec::new();
        image::DynamicImage::ImageRgb8(picture(400, 300, 7))
            .write_to(&mut Cursor::new(&mut gif), ImageFormat::Gif)
            .map_err(std::io::Error::other)?;
        write("animation-frame.gif", &gif)?;
        // Stored landscape; EXIF orientation 6 means "rotate 90° clockwise
        // to display", so its thumbnail must come out portrait.
        let sideways = jpeg(&picture(600, 400, 11), 85);
        write(
            "phone-portrait-exif6.jpg",
            &with_exif_orientation(&sideways, 6),
        )?;
        write("corrupt.jpg", &corrupt_jpeg())?;
    }
    Ok(written)
}

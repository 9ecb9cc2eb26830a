//! Thumbnail quality for `bench/thumbnail.sh`: the PSNR of each thumbnail
//! against a reference made the slow, careful way from the same source —
//! a full-size decode (no DCT scaling), its EXIF orientation applied, one
//! area-averaging resize (a box filter over each output pixel's whole
//! footprint) to exactly the thumbnail's size. Area averaging, not
//! Lanczos3: the reference must not be one contender's own resampler.
//!
//!     psnr SOURCE_DIR THUMB_DIR
//!
//! Each `THUMB_DIR/NAME.jpg` is compared with the reference made from
//! `SOURCE_DIR/NAME.jpg`. Prints `psnr NAME DB` per thumbnail, then
//! `mean_psnr_db`, `min_psnr_db` and `count`. RGB, 8 bits a channel, no
//! colour management (neither contender's output is compared after one).

use std::path::Path;
use std::process::ExitCode;

use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::U8x3;
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

type BoxError = Box<dyn std::error::Error>;

/// The source, fully decoded and oriented, resized to `width` x `height`.
fn reference(source: &Path, width: u32, height: u32) -> Result<RgbImage, BoxError> {
    let mut decoder = ImageReader::open(source)?
        .with_guessed_format()?
        .into_decoder()?;
    let orientation = decoder.orientation()?;
    let mut full = DynamicImage::from_decoder(decoder)?;
    full.apply_orientation(orientation);
    let full = full.to_rgb8();
    let src = TypedImageRef::<U8x3>::from_buffer(full.width(), full.height(), full.as_raw())?;
    let mut out = vec![0u8; width as usize * height as usize * 3];
    let mut dst = TypedImage::<U8x3>::from_buffer(width, height, &mut out)?;
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Box));
    Resizer::new().resize_typed(&src, &mut dst, &options)?;
    RgbImage::from_raw(width, height, out).ok_or_else(|| "reference buffer size".into())
}

fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    let (sum, n) = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .fold((0u64, 0u64), |(sum, n), (x, y)| {
            let d = u64::from(x.abs_diff(*y));
            (sum + d * d, n + 1)
        });
    if sum == 0 {
        return f64::INFINITY;
    }
    let mse = sum as f64 / n as f64;
    10.0 * (255.0 * 255.0 / mse).log10()
}

fn run(sources: &Path, thumbs: &Path) -> Result<(), BoxError> {
    // Thumbnails only: shoal keeps its journal in `.shoal/` beside them.
    let mut names: Vec<_> = std::fs::read_dir(thumbs)?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .filter(|name| name.to_string_lossy().ends_with(".jpg"))
        .collect();
    names.sort();
    let mut values = Vec::new();
    for name in names {
        let thumb = image::open(thumbs.join(&name))?.to_rgb8();
        let reference = reference(&sources.join(&name), thumb.width(), thumb.height())
            .map_err(|e| format!("{}: {e}", name.to_string_lossy()))?;
        let db = psnr(&reference, &thumb);
        println!("psnr {} {db:.2}", name.to_string_lossy());
        values.push(db);
    }
    if values.is_empty() {
        return Err(format!("no thumbnails in {}", thumbs.display()).into());
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    println!("mean_psnr_db {mean:.2}");
    println!("min_psnr_db {min:.2}");
    println!("count {}", values.len());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [sources, thumbs] = args.as_slice() else {
        eprintln!("usage: psnr SOURCE_DIR THUMB_DIR");
        return ExitCode::from(2);
    };
    match run(Path::new(sources), Path::new(thumbs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("psnr: {e}");
            ExitCode::FAILURE
        }
    }
}

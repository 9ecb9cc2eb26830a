//! The seed story's handler: turn an image into a JPEG thumbnail.
//!
//! - fits the image within `max_edge` x `max_edge`, keeping its aspect ratio
//!   (never enlarges);
//! - honours the EXIF orientation, so phone photos come out upright;
//! - JPEG input is downscaled while decoding (libjpeg's scaled IDCT: 1/8,
//!   1/4 or 1/2; a progressive JPEG shrunk by 8 or more is decoded from its
//!   DC scans alone), then resized with a SIMD Lanczos3 filter;
//! - written by libjpeg-turbo's encoder, 4:2:0 by default, with the
//!   source's ICC colour profile when it describes RGB (or grey) pixels;
//! - corrupt or unsupported input is a permanent error with the reason.
//!
//! Settings come from the environment, as a Lambda function's would:
//! `THUMBNAIL_MAX_EDGE` (default 256), `THUMBNAIL_QUALITY` (1-100,
//! default 80) and `THUMBNAIL_CHROMA` (`4:2:0`, the default, or `4:4:4`).

pub mod bombs;
mod decode;
mod encode;
mod icc;
mod jpeg_layout;
pub mod samples;
mod scans;

pub use encode::Chroma;

use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::{U8, U8x3};
use fast_image_resize::{FilterType, PixelTrait, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, GrayImage, RgbImage};
use shoal_worker::{Blob, Context, Handler, HandlerError, Item, Object};

/// Thumbnail settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Longest edge of the thumbnail, in pixels.
    pub max_edge: u32,
    /// JPEG quality, 1-100 (libjpeg's scale).
    pub quality: u8,
    /// Chroma subsampling of the thumbnails.
    pub chroma: Chroma,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_edge: 256,
            quality: 80,
            chroma: Chroma::Half,
        }
    }
}

/// Why an image cannot be made into a thumbnail. Every variant is permanent:
/// the same bytes fail the same way every time.
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    /// Not an image format this handler reads.
    #[error("unsupported image format{0}")]
    Unsupported(String),
    /// The bytes claim a format but do not decode.
    #[error("corrupt {format} image: {reason}")]
    Corrupt {
        /// The format it claimed to be.
        format: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// Decoding would take more memory than the invocation may use.
    #[error(
        "{format} image of {width}x{height} pixels needs about {needed_mib} MiB to decode, \
         over this invocation's memory budget of {budget_mib} MiB"
    )]
    TooLarge {
        /// The format it claims to be.
        format: &'static str,
        /// Width its header declares.
        width: u32,
        /// Height its header declares.
        height: u32,
        /// Working memory the decoder would need.
        needed_mib: u64,
        /// What the invocation may use.
        budget_mib: u64,
    },
    /// Resizing or encoding failed.
    #[error("cannot produce thumbnail: {0}")]
    Process(String),
}

impl From<ThumbnailError> for HandlerError {
    fn from(err: ThumbnailError) -> Self {
        HandlerError::permanent(err.to_string())
    }
}

/// A setting in the environment is not usable.
#[derive(Debug, thiserror::Error)]
#[error("{name}={value:?}: {reason}")]
pub struct ConfigError {
    name: &'static str,
    value: String,
    reason: &'static str,
}

fn env_number(
    name: &'static str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
    reason: &'static str,
) -> Result<u32, ConfigError> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(value) => match value.trim().parse::<u32>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(ConfigError {
                name,
                value,
                reason,
            }),
        },
    }
}

impl Config {
    /// Reads `THUMBNAIL_MAX_EDGE`, `THUMBNAIL_QUALITY` and
    /// `THUMBNAIL_CHROMA`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let max_edge = env_number(
            "THUMBNAIL_MAX_EDGE",
            defaults.max_edge,
            1..=16_384,
            "expected 1-16384 pixels",
        )?;
        let quality = env_number(
            "THUMBNAIL_QUALITY",
            u32::from(defaults.quality),
            1..=100,
            "expected 1-100",
        )?;
        let chroma = match std::env::var("THUMBNAIL_CHROMA") {
            Err(_) => defaults.chroma,
            Ok(value) => value.parse().map_err(|reason| ConfigError {
                name: "THUMBNAIL_CHROMA",
                value,
                reason,
            })?,
        };
        Ok(Self {
            max_edge,
            quality: u8::try_from(quality).unwrap_or(defaults.quality),
            chroma,
        })
    }
}

/// The largest size within `max_edge` x `max_edge` with the aspect ratio of
/// `width` x `height`, never larger than the original.
pub fn fit_within(width: u32, height: u32, max_edge: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= max_edge || longest == 0 {
        return (width.max(1), height.max(1));
    }
    let scale = f64::from(max_edge) / f64::from(longest);
    let w = (f64::from(width) * scale).round().max(1.0) as u32;
    let h = (f64::from(height) * scale).round().max(1.0) as u32;
    (w.min(max_edge), h.min(max_edge))
}

/// Makes a JPEG thumbnail of `bytes` (any supported image format),
/// refusing images whose decoding would need more than `memory_budget`
/// bytes (see [`shoal_worker::Context::memory_budget_bytes`]).
pub fn make_thumbnail(
    bytes: &[u8],
    config: &Config,
    memory_budget: u64,
) -> Result<Vec<u8>, ThumbnailError> {
    let decode::Decoded {
        image,
        orientation,
        icc: profile,
    } = decode::decode(bytes, config.max_edge, memory_budget)?;
    let image = flatten(image);
    let (w, h) = fit_within(image.width(), image.height(), config.max_edge);
    let resized = if (w, h) == (image.width(), image.height()) {
        image
    } else {
        let (sw, sh) = (image.width(), image.height());
        let resized = match &image {
            DynamicImage::ImageRgb8(src) => resize_pixels::<U8x3>(src.as_raw(), (sw, sh), (w, h))?
                .and_then(|px| RgbImage::from_raw(w, h, px).map(DynamicImage::ImageRgb8)),
            DynamicImage::ImageLuma8(src) => resize_pixels::<U8>(src.as_raw(), (sw, sh), (w, h))?
                .and_then(|px| GrayImage::from_raw(w, h, px).map(DynamicImage::ImageLuma8)),
            _ => None,
        };
        resized.ok_or_else(|| {
            ThumbnailError::Process(format!("resize {:?} {sw}x{sh} to {w}x{h}", image.color()))
        })?
    };
    let mut oriented = resized;
    oriented.apply_orientation(orientation);
    let gray = matches!(oriented, DynamicImage::ImageLuma8(_));
    let pixels = encode::Pixels {
        bytes: oriented.as_bytes(),
        width: oriented.width(),
        height: oriented.height(),
        gray,
        icc: profile.as_deref().filter(|p| icc::describes(p, gray)),
    };
    encode::jpeg(&pixels, config.quality, config.chroma, false)
        .map_err(|e| ThumbnailError::Process(format!("encode JPEG: {e}")))
}

/// Lanczos3 resize of 8-bit pixels of type `P` (only the two pixel types a
/// flattened image can have are instantiated, which keeps compile times
/// sane). `None` if the buffer does not match its dimensions.
fn resize_pixels<P: PixelTrait>(
    src: &[u8],
    (sw, sh): (u32, u32),
    (w, h): (u32, u32),
) -> Result<Option<Vec<u8>>, ThumbnailError> {
    let Ok(src) = TypedImageRef::<P>::from_buffer(sw, sh, src) else {
        return Ok(None);
    };
    let mut out = vec![0u8; w as usize * h as usize * std::mem::size_of::<P>()];
    let Ok(mut dst) = TypedImage::<P>::from_buffer(w, h, &mut out) else {
        return Ok(None);
    };
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    Resizer::new()
        .resize_typed(&src, &mut dst, &options)
        .map_err(|e| ThumbnailError::Process(format!("resize to {w}x{h}: {e}")))?;
    Ok(Some(out))
}

/// JPEG has no alpha and 8 bits a channel: composite transparent images onto
/// white and reduce deep images to 8 bits.
fn flatten(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) => image,
        DynamicImage::ImageLuma16(_) => DynamicImage::ImageLuma8(image.to_luma8()),
        other if !other.color().has_alpha() => DynamicImage::ImageRgb8(other.to_rgb8()),
        other => {
            let rgba = other.into_rgba8();
            let mut rgb = image::RgbImage::new(rgba.width(), rgba.height());
            for (dst, src) in rgb.pixels_mut().zip(rgba.pixels()) {
                let a = u32::from(src[3]);
                for c in 0..3 {
                    dst[c] = ((u32::from(src[c]) * a + 255 * (255 - a) + 127) / 255) as u8;
                }
            }
            DynamicImage::ImageRgb8(rgb)
        }
    }
}

/// The handler: one image object in, one JPEG thumbnail out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Thumbnailer {
    config: Config,
}

impl Thumbnailer {
    /// A thumbnailer with `config`.
    pub fn new(config: Config) -> Self {
        Self { config }
    }

    /// A thumbnailer configured from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Config::from_env().map(Self::new)
    }
}

impl Handler for Thumbnailer {
    type Input = Object;
    type Output = Blob;

    async fn call(&self, item: Item<Object>, ctx: Context) -> Result<Blob, HandlerError> {
        let config = self.config;
        let bytes = item.payload.bytes;
        let budget = ctx.memory_budget_bytes();
        // Decoding is CPU-bound: keep it off the async worker threads, in
        // this invocation's concurrency slot until it ends.
        match ctx
            .spawn_blocking(move || make_thumbnail(&bytes, &config, budget))
            .await
        {
            Ok(Ok(jpeg)) => Ok(Blob {
                bytes: jpeg.into(),
                extension: "jpg".into(),
                content_type: "image/jpeg".into(),
            }),
            Ok(Err(e)) => Err(e.into()),
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(join) => Err(HandlerError::retryable(format!(
                "thumbnail task stopped: {join}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    use crate::samples::{
        corrupt_jpeg, icc_profile, jpeg, picture, progressive_jpeg, with_exif_orientation,
        with_icc_profile,
    };

    const BUDGET: u64 = 256 * 1024 * 1024;

    fn dims(jpeg: &[u8]) -> (u32, u32) {
        let img = image::load_from_memory(jpeg).unwrap();
        (img.width(), img.height())
    }

    #[test]
    fn large_jpeg_is_scaled_into_the_box() {
        let out = make_thumbnail(
            &jpeg(&picture(3000, 2000, 1), 85),
            &Config::default(),
            BUDGET,
        )
        .unwrap();
        assert_eq!(dims(&out), (256, 171));
    }

    #[test]
    fn exif_orientation_turns_the_thumbnail_upright() {
        let sideways = with_exif_orientation(&jpeg(&picture(600, 400, 2), 85), 6);
        let out = make_thumbnail(&sideways, &Config::default(), BUDGET).unwrap();
        assert_eq!(dims(&out), (171, 256));
        let upright = with_exif_orientation(&jpeg(&picture(600, 400, 2), 85), 1);
        assert_eq!(
            dims(&make_thumbnail(&upright, &Config::default(), BUDGET).unwrap()),
            (256, 171)
        );
    }

    /// The ICC profile a JPEG carries.
    fn profile_of(jpeg: &[u8]) -> Option<Vec<u8>> {
        let d = mozjpeg::Decompress::builder()
            .with_markers(&[mozjpeg::Marker::APP(2)])
            .from_mem(jpeg)
            .unwrap();
        icc::from_app2(d.markers().map(|m| m.data))
    }

    #[test]
    fn the_sources_colour_profile_comes_along_when_it_describes_the_thumbnail() {
        let photo = jpeg(&picture(600, 400, 2), 85);
        assert_eq!(
            profile_of(&make_thumbnail(&photo, &Config::default(), BUDGET).unwrap()),
            None
        );
        // Two APP2 segments' worth, through the sequential and the
        // progressive (DC scans only) paths.
        let rgb = icc_profile(b"RGB ", 70_000);
        let wide = progressive_jpeg(&picture(2048, 96, 3), 85, Chroma::Full, false);
        for source in [&photo, &wide] {
            let out = make_thumbnail(&with_icc_profile(source, &rgb), &Config::default(), BUDGET);
            assert_eq!(profile_of(&out.unwrap()).as_deref(), Some(&rgb[..]));
        }
        // A CMYK profile does not describe RGB pixels; a grey one does not
        // either.
        for space in [b"CMYK", b"GRAY"] {
            let tagged = with_icc_profile(&photo, &icc_profile(space, 500));
            let out = make_thumbnail(&tagged, &Config::default(), BUDGET).unwrap();
            assert_eq!(profile_of(&out), None);
        }
    }

    #[test]
    fn grayscale_and_png_inputs_work() {
        let gray = image::DynamicImage::ImageRgb8(picture(800, 800, 3)).to_luma8();
        let mut gray_jpeg = Vec::new();
        image::DynamicImage::ImageLuma8(gray.clone())
            .write_to(&mut Cursor::new(&mut gray_jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        assert_eq!(
            dims(&make_thumbnail(&gray_jpeg, &Config::default(), BUDGET).unwrap()),
            (256, 256)
        );
        let mut png = Vec::new();
        image::DynamicImage::ImageLuma8(gray)
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let config = Config {
            max_edge: 100,
            quality: 50,
            chroma: Chroma::Full,
        };
        assert_eq!(
            dims(&make_thumbnail(&png, &config, BUDGET).unwrap()),
            (100, 100)
        );
    }

    #[test]
    fn corrupt_and_unsupported_inputs_are_permanent_errors_with_a_reason() {
        let err = make_thumbnail(&corrupt_jpeg(), &Config::default(), BUDGET).unwrap_err();
        assert!(
            matches!(err, ThumbnailError::Corrupt { format: "JPEG", .. }),
            "{err}"
        );
        assert!(HandlerError::from(err).is_permanent());
        let err = make_thumbnail(b"just some text, not an image", &Config::default(), BUDGET)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unsupported image format (first bytes 6a757374)"),
            "{err}"
        );
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(picture(64, 64, 4))
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        png.truncate(png.len() / 2);
        let err = make_thumbnail(&png, &Config::default(), BUDGET).unwrap_err();
        assert!(err.to_string().starts_with("corrupt PNG image"), "{err}");
    }

    #[test]
    fn bombs_are_refused_from_their_headers_with_their_dimensions() {
        // A worker of 1 GiB running 8 at once.
        let budget = 120 << 20;
        for (name, bytes) in crate::bombs::all() {
            let err = make_thumbnail(&bytes, &Config::default(), budget).unwrap_err();
            assert!(
                matches!(err, ThumbnailError::TooLarge { .. }),
                "{name}: {err}"
            );
            let reason = HandlerError::from(err);
            assert!(reason.is_permanent());
            let size = name.split(['-', '.']).find(|p| p.contains('x')).unwrap();
            assert!(reason.reason().contains(size), "{name}: {reason}");
            assert!(reason.reason().contains("budget of 120 MiB"), "{reason}");
        }
    }

    #[test]
    fn a_truncated_jpeg_is_corrupt_not_grey() {
        let whole = jpeg(&picture(640, 480, 5), 85);
        let cut = &whole[..whole.len() * 2 / 3];
        let err = make_thumbnail(cut, &Config::default(), BUDGET).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn the_budget_admits_what_fits_and_refuses_what_does_not() {
        // 4000x3000 RGBA PNG: 48 MB decoded; about 180 MB with the
        // decoder's buffers and the conversion to RGB.
        let png = crate::bombs::png(4000, 3000);
        let err = make_thumbnail(&png, &Config::default(), 64 << 20).unwrap_err();
        assert!(err.to_string().contains("4000x3000"), "{err}");
        // Within budget it is decoded, and the missing data found.
        let err = make_thumbnail(&png, &Config::default(), 1 << 30).unwrap_err();
        assert!(matches!(err, ThumbnailError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn fits_within_the_max_edge_keeping_aspect() {
        assert_eq!(fit_within(5120, 2880, 256), (256, 144));
        assert_eq!(fit_within(2880, 5120, 256), (144, 256));
        assert_eq!(fit_within(100, 50, 256), (100, 50), "never enlarges");
        assert_eq!(fit_within(10_000, 1, 256), (256, 1));
    }
}

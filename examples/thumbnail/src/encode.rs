//! JPEG encoding with libjpeg-turbo's encoder (through the `mozjpeg`
//! crate, set to libjpeg-turbo's defaults): its standard quantisation
//! tables scaled by the quality setting, the same as `cjpeg`, libvips and
//! Pillow write, with chroma subsampling chosen by [`Chroma`] and Huffman
//! tables optimised for each thumbnail (a second pass over a few thousand
//! blocks, for files a few percent smaller).

use mozjpeg::{ColorSpace, Compress, Marker};

use crate::icc;

/// How much colour detail a thumbnail keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Chroma {
    /// 4:2:0: colour at half the resolution in each direction, what
    /// cameras, libjpeg and libvips write by default.
    #[default]
    Half,
    /// 4:4:4: colour at full resolution (sharp coloured edges, such as
    /// text on a coloured background; larger files).
    Full,
}

impl std::str::FromStr for Chroma {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "4:2:0" | "420" => Ok(Self::Half),
            "4:4:4" | "444" => Ok(Self::Full),
            _ => Err("expected 4:2:0 or 4:4:4"),
        }
    }
}

/// Pixels to encode: 8-bit RGB or grey, rows of `width` packed pixels.
pub struct Pixels<'a> {
    pub bytes: &'a [u8],
    pub width: u32,
    pub height: u32,
    pub gray: bool,
    /// An ICC profile to embed (it must describe RGB or grey as the
    /// pixels are; see [`crate::icc::describes`]).
    pub icc: Option<&'a [u8]>,
}

/// Profile bytes in one APP2 segment (65,533 less the tag and numbers).
const ICC_CHUNK: usize = 65_519;

/// The largest profile JPEG can carry: 255 segments.
const MAX_ICC: usize = 255 * ICC_CHUNK;

/// Encodes `pixels` as a JPEG at `quality` (1-100). Sequential unless
/// `progressive`.
pub fn jpeg(
    pixels: &Pixels<'_>,
    quality: u8,
    chroma: Chroma,
    progressive: bool,
) -> Result<Vec<u8>, String> {
    let channels = if pixels.gray { 1 } else { 3 };
    let expected = pixels.width as usize * pixels.height as usize * channels;
    if pixels.bytes.len() != expected || pixels.width == 0 || pixels.height == 0 {
        return Err(format!(
            "{} bytes of pixels for {}x{} with {channels} channels",
            pixels.bytes.len(),
            pixels.width,
            pixels.height
        ));
    }
    let run = || -> std::io::Result<Vec<u8>> {
        let mut c = Compress::new(if pixels.gray {
            ColorSpace::JCS_GRAYSCALE
        } else {
            ColorSpace::JCS_RGB
        });
        c.set_fastest_defaults();
        c.set_size(pixels.width as usize, pixels.height as usize);
        c.set_quality(f32::from(quality.clamp(1, 100)));
        if !pixels.gray {
            let size = match chroma {
                Chroma::Half => (2, 2),
                Chroma::Full => (1, 1),
            };
            c.set_chroma_sampling_pixel_sizes(size, size);
        }
        c.set_optimize_coding(true);
        if progressive {
            c.set_progressive_mode();
        }
        // About a bit per pixel at the usual qualities.
        let capacity = expected / 6 + 1024;
        let mut started = c.start_compress(Vec::with_capacity(capacity))?;
        if let Some(profile) = pixels.icc.filter(|p| !p.is_empty() && p.len() <= MAX_ICC) {
            // Numbered from 1, as the ICC specification and libjpeg's
            // reader require (the crate's own writer counts from 0).
            let count = profile.len().div_ceil(ICC_CHUNK);
            let mut segment = Vec::with_capacity(ICC_CHUNK.min(profile.len()) + 14);
            for (i, chunk) in profile.chunks(ICC_CHUNK).enumerate() {
                segment.clear();
                segment.extend_from_slice(icc::TAG);
                segment.extend([(i + 1) as u8, count as u8]);
                segment.extend_from_slice(chunk);
                started.write_marker(Marker::APP(2), &segment);
            }
        }
        started.write_scanlines(pixels.bytes)?;
        started.finish()
    };
    // libjpeg reports fatal errors by unwinding out of the encoder.
    match std::panic::catch_unwind(run) {
        Ok(Ok(jpeg)) => Ok(jpeg),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "encoder failed".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::picture;

    fn layout(jpeg: &[u8]) -> (u32, u32, Vec<(u8, u8)>) {
        let d = mozjpeg::Decompress::new_mem(jpeg).unwrap();
        let sampling = d
            .components()
            .iter()
            .map(|c| (c.h_samp_factor as u8, c.v_samp_factor as u8))
            .collect();
        (d.width() as u32, d.height() as u32, sampling)
    }

    #[test]
    fn writes_the_size_and_sampling_asked_for() {
        let image = picture(301, 157, 3);
        let pixels = Pixels {
            bytes: image.as_raw(),
            width: 301,
            height: 157,
            gray: false,
            icc: None,
        };
        let half = jpeg(&pixels, 80, Chroma::Half, false).unwrap();
        let full = jpeg(&pixels, 80, Chroma::Full, false).unwrap();
        assert_eq!(layout(&half), (301, 157, vec![(2, 2), (1, 1), (1, 1)]));
        assert_eq!(layout(&full), (301, 157, vec![(1, 1), (1, 1), (1, 1)]));
        assert!(half.len() < full.len());
        let low = jpeg(&pixels, 30, Chroma::Half, false).unwrap();
        assert!(low.len() < half.len());
        let gray = image::DynamicImage::ImageRgb8(image).to_luma8();
        let gray = Pixels {
            bytes: gray.as_raw(),
            width: 301,
            height: 157,
            gray: true,
            icc: None,
        };
        assert_eq!(
            layout(&jpeg(&gray, 80, Chroma::Half, false).unwrap()),
            (301, 157, vec![(1, 1)])
        );
    }

    #[test]
    fn chroma_settings_parse_and_others_are_refused() {
        assert_eq!(" 4:2:0".parse(), Ok(Chroma::Half));
        assert_eq!("444".parse(), Ok(Chroma::Full));
        assert!("4:2:2".parse::<Chroma>().is_err());
        assert!("".parse::<Chroma>().is_err());
    }

    #[test]
    fn a_buffer_that_does_not_match_its_size_is_an_error() {
        let pixels = Pixels {
            bytes: &[0; 10],
            width: 4,
            height: 4,
            gray: false,
            icc: None,
        };
        assert!(jpeg(&pixels, 80, Chroma::Half, false).is_err());
        let empty = Pixels {
            bytes: &[],
            width: 0,
            height: 0,
            gray: true,
            icc: None,
        };
        assert!(jpeg(&empty, 80, Chroma::Half, false).is_err());
    }
}

//! A progressive JPEG decoded at an eighth of its size needs only the DC
//! coefficients of its full-resolution components.
//!
//! At 1/8 scale libjpeg's IDCT makes one pixel of each 8x8 block of a
//! full-resolution component from its DC coefficient alone; the AC
//! coefficients are entropy-decoded and then never read. A sequential JPEG
//! interleaves them with the DC, but a progressive one sends them in scans
//! of their own: most of the file and most of the decoding time. Those
//! scans are left out here, before the decoder sees the file, and the
//! decoder makes the same pixels from what is left, provided block
//! smoothing is off (it would guess the missing coefficients).
//!
//! Subsampled components (the chroma of a 4:2:0 file) keep their AC scans:
//! at 1/8 scale libjpeg gives them a larger IDCT instead of upsampling
//! them, and that IDCT reads AC coefficients.
//!
//! Assumes: the bytes went through [`crate::jpeg_layout::read`] (they start
//! with SOI and end with EOI). Anything this walk does not understand
//! returns `None`, and the decoder gets the file as it is.

use std::ops::Range;

/// A component of the frame: its id and sampling factors.
#[derive(Clone, Copy)]
struct Component {
    id: u8,
    h: u8,
    v: u8,
}

/// `bytes` without the AC scans of its full-resolution components, or
/// `None` when there is nothing to leave out (a sequential JPEG, no such
/// scan) or the markers are not what a well-formed progressive JPEG has.
///
/// The copy is never larger than `bytes`: its headers, tables, DC scans,
/// the AC scans of subsampled components and the end-of-image marker, in
/// their order.
pub fn without_full_resolution_ac(bytes: &[u8]) -> Option<Vec<u8>> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    // Start of image, then what follows it.
    let mut keep: Vec<Range<usize>> = Vec::with_capacity(16);
    keep.push(0..2);
    let mut components: Vec<Component> = Vec::new();
    let mut dropped = false;
    let mut at = 2;
    loop {
        let start = at;
        if bytes.get(at) != Some(&0xFF) {
            return None;
        }
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let code = *bytes.get(at)?;
        at += 1;
        match code {
            0xD9 => {
                keep.push(start..at);
                break;
            }
            // Markers without a length (TEM, a stray restart).
            0x01 | 0xD0..=0xD7 => {
                keep.push(start..at);
                continue;
            }
            _ => {}
        }
        let length = usize::from(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]));
        let segment = bytes.get(at + 2..at + length.max(2))?;
        at += length.max(2);
        match code {
            // Start of frame, every kind but DHT (C4), JPG (C8) and DAC (CC):
            // only progressive Huffman frames (SOF2) are handled.
            0xC2 => components = frame_components(segment)?,
            0xC0..=0xCF if !matches!(code, 0xC4 | 0xC8 | 0xCC) => return None,
            0xDA => {
                let end = scan_end(bytes, at)?;
                if is_full_resolution_ac(segment, &components)? {
                    dropped = true;
                } else {
                    keep.push(start..end);
                }
                at = end;
                continue;
            }
            _ => {}
        }
        keep.push(start..at);
    }
    if !dropped {
        return None;
    }
    let mut out = Vec::with_capacity(keep.iter().map(|r| r.len()).sum());
    for range in keep {
        out.extend_from_slice(&bytes[range]);
    }
    Some(out)
}

/// The components of a frame header's segment.
fn frame_components(segment: &[u8]) -> Option<Vec<Component>> {
    let count = usize::from(*segment.get(5)?);
    let specs = segment.get(6..6 + 3 * count)?;
    let components: Vec<Component> = specs
        .chunks_exact(3)
        .map(|c| Component {
            id: c[0],
            h: c[1] >> 4,
            v: c[1] & 0x0F,
        })
        .collect();
    (!components.is_empty()).then_some(components)
}

/// Whether a scan header's segment starts an AC scan (spectral selection
/// from 1) of components that are all at full resolution.
fn is_full_resolution_ac(segment: &[u8], components: &[Component]) -> Option<bool> {
    let count = usize::from(*segment.first()?);
    let ids = segment.get(1..1 + 2 * count)?;
    let spectral_start = *segment.get(1 + 2 * count)?;
    let max_h = components.iter().map(|c| c.h).max()?;
    let max_v = components.iter().map(|c| c.v).max()?;
    let mut full = count > 0;
    for pair in ids.chunks_exact(2) {
        let component = components.iter().find(|c| c.id == pair[0])?;
        full &= component.h == max_h && component.v == max_v;
    }
    Some(spectral_start > 0 && full)
}

/// Where the entropy-coded data starting at `from` ends: at the first
/// marker that is neither a stuffed 0xFF 0x00 nor a restart marker.
fn scan_end(bytes: &[u8], mut from: usize) -> Option<usize> {
    loop {
        from += memchr::memchr(0xFF, bytes.get(from..)?)?;
        match *bytes.get(from + 1)? {
            0x00 | 0xD0..=0xD7 => from += 2,
            // Fill bytes before a marker.
            0xFF => from += 1,
            _ => return Some(from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::{jpeg, picture, progressive_jpeg};
    use crate::{Chroma, decode};

    /// Pixels of `bytes` decoded at 1/8 scale, block smoothing off.
    fn eighth(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
        let mut d = mozjpeg::Decompress::new_mem(bytes).unwrap();
        d.scale(1);
        d.do_block_smoothing(false);
        let gray = d.color_space() == mozjpeg::ColorSpace::JCS_GRAYSCALE;
        let mut started = if gray {
            d.grayscale().unwrap()
        } else {
            d.rgb().unwrap()
        };
        let size = (started.width(), started.height());
        let pixels: Vec<u8> = started.read_scanlines().unwrap();
        started.finish().unwrap();
        (size.0, size.1, pixels)
    }

    #[test]
    fn the_copy_decodes_to_the_same_pixels_at_an_eighth() {
        let image = picture(517, 389, 4);
        for chroma in [Chroma::Full, Chroma::Half] {
            let whole = progressive_jpeg(&image, 85, chroma, false);
            let lean = without_full_resolution_ac(&whole).unwrap();
            assert!(
                lean.len() * 2 < whole.len(),
                "{chroma:?}: {} of {} bytes",
                lean.len(),
                whole.len()
            );
            assert_eq!(eighth(&lean), eighth(&whole), "{chroma:?}");
            assert!(decode::decode(&lean, 64, u64::MAX).is_ok());
        }
        let gray = progressive_jpeg(&image, 85, Chroma::Full, true);
        let lean = without_full_resolution_ac(&gray).unwrap();
        assert!(lean.len() * 2 < gray.len());
        assert_eq!(eighth(&lean), eighth(&gray));
    }

    #[test]
    fn subsampled_components_keep_their_ac_scans() {
        let image = picture(256, 256, 5);
        let full = progressive_jpeg(&image, 85, Chroma::Full, false);
        let half = progressive_jpeg(&image, 85, Chroma::Half, false);
        let ratio = |whole: &[u8]| {
            without_full_resolution_ac(whole).map(|lean| lean.len() as f64 / whole.len() as f64)
        };
        // 4:2:0 keeps the chroma's AC: a larger share of the file stays.
        assert!(ratio(&half).unwrap() > ratio(&full).unwrap());
    }

    #[test]
    fn sequential_and_malformed_files_are_left_as_they_are() {
        let baseline = jpeg(&picture(64, 48, 1), 80);
        assert!(without_full_resolution_ac(&baseline).is_none());
        let whole = progressive_jpeg(&picture(64, 48, 1), 80, Chroma::Full, false);
        // Cut short, a scan header pointing at an unknown component, junk.
        assert!(without_full_resolution_ac(&whole[..whole.len() / 2]).is_none());
        let sos = whole.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap();
        let mut unknown = whole.clone();
        unknown[sos + 5] = 0x7F;
        assert!(without_full_resolution_ac(&unknown).is_none());
        assert!(without_full_resolution_ac(b"\xFF\xD8\xFF\xC2\x00").is_none());
        assert!(without_full_resolution_ac(b"").is_none());
    }
}

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

/// A component of the frame: its id, sampling factors, and whether a DC
/// scan has covered it yet.
#[derive(Clone, Copy)]
struct Component {
    id: u8,
    h: u8,
    v: u8,
    has_dc: bool,
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
    // Never larger than the input: kept bytes are appended as they come.
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..2]);
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
                out.extend_from_slice(&bytes[start..at]);
                break;
            }
            // Markers without a length (TEM, a stray restart).
            0x01 | 0xD0..=0xD7 => {
                out.extend_from_slice(&bytes[start..at]);
                continue;
            }
            // Not a marker libjpeg reads the same way (FF 00 outside a
            // scan, reserved codes): leave the file alone.
            0x00 | 0x02..=0xBF => return None,
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
                if drop_scan(segment, &mut components)? {
                    dropped = true;
                } else {
                    out.extend_from_slice(&bytes[start..end]);
                }
                at = end;
                continue;
            }
            _ => {}
        }
        out.extend_from_slice(&bytes[start..at]);
    }
    // Every component has its DC: the copy has an image in it.
    if !dropped || components.iter().any(|c| !c.has_dc) {
        return None;
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
            has_dc: false,
        })
        .collect();
    (!components.is_empty()).then_some(components)
}

/// Whether the scan with header `segment` is left out: an AC scan
/// (spectral selection from 1) of one full-resolution component whose DC
/// came before it. `None` (leave the file alone) for a header that names
/// a component the frame lacks or is not well formed.
fn drop_scan(segment: &[u8], components: &mut [Component]) -> Option<bool> {
    let count = usize::from(*segment.first()?);
    if count == 0 || segment.len() != 4 + 2 * count {
        return None;
    }
    let ids = &segment[1..1 + 2 * count];
    let (spectral_start, spectral_end) = (segment[1 + 2 * count], segment[2 + 2 * count]);
    if spectral_start > spectral_end || spectral_end > 63 {
        return None;
    }
    let max_h = components.iter().map(|c| c.h).max()?;
    let max_v = components.iter().map(|c| c.v).max()?;
    if spectral_start == 0 {
        for pair in ids.chunks_exact(2) {
            components.iter_mut().find(|c| c.id == pair[0])?.has_dc = true;
        }
        return Some(false);
    }
    // Progressive AC scans carry one component.
    let component = components.iter().find(|c| c.id == ids[0])?;
    if count != 1 {
        return None;
    }
    Some(component.h == max_h && component.v == max_v && component.has_dc)
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
        }
        let gray = progressive_jpeg(&image, 85, Chroma::Full, true);
        let lean = without_full_resolution_ac(&gray).unwrap();
        assert!(lean.len() * 2 < gray.len());
        assert_eq!(eighth(&lean), eighth(&gray));
    }

    /// (component ids, spectral start) of every scan of `jpeg`.
    fn scans(jpeg: &[u8]) -> Vec<(Vec<u8>, u8)> {
        let mut found = Vec::new();
        let mut at = 2;
        while at + 4 <= jpeg.len() {
            let (code, len) = (
                jpeg[at + 1],
                usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]])),
            );
            if code == 0xDA {
                let n = usize::from(jpeg[at + 4]);
                let ids = (0..n).map(|k| jpeg[at + 5 + 2 * k]).collect();
                found.push((ids, jpeg[at + 5 + 2 * n]));
                at = scan_end(jpeg, at + 2 + len).unwrap();
            } else {
                at += 2 + len;
            }
        }
        found
    }

    #[test]
    fn subsampled_components_keep_their_ac_scans() {
        let half = progressive_jpeg(&picture(256, 256, 5), 85, Chroma::Half, false);
        let lean = without_full_resolution_ac(&half).unwrap();
        let ac = |jpeg: &[u8], id: u8| {
            scans(jpeg)
                .iter()
                .filter(|(ids, ss)| *ss > 0 && ids.contains(&id))
                .count()
        };
        // Luma (id 1) loses its AC scans; the 4:2:0 chroma keeps all of
        // theirs; the DC scans stay.
        assert!(ac(&half, 1) > 0);
        assert_eq!(ac(&lean, 1), 0);
        for chroma in [2, 3] {
            assert!(ac(&lean, chroma) > 0);
            assert_eq!(ac(&lean, chroma), ac(&half, chroma));
        }
        let dc = |jpeg: &[u8]| scans(jpeg).iter().filter(|(_, ss)| *ss == 0).count();
        assert_eq!(dc(&lean), dc(&half));
    }

    #[test]
    fn the_whole_file_and_its_lean_copy_decode_to_the_same_thumbnail_pixels() {
        let whole = progressive_jpeg(&picture(2048, 96, 6), 85, Chroma::Half, false);
        let lean = without_full_resolution_ac(&whole).unwrap();
        // The lean copy has nothing left to cut: decoded as it is.
        assert!(without_full_resolution_ac(&lean).is_none());
        let a = decode::decode(&whole, 256, u64::MAX).unwrap().image;
        let b = decode::decode(&lean, 256, u64::MAX).unwrap().image;
        assert_eq!((a.width(), a.height()), (256, 12));
        assert_eq!(a.as_bytes(), b.as_bytes());
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

//! What a JPEG's markers say about how it must be decoded, read before the
//! decoder allocates anything.
//!
//! libjpeg decodes a single-scan sequential JPEG a few rows at a time, but
//! a progressive JPEG (or a sequential one whose components come in
//! separate scans) needs every DCT coefficient of the whole image in memory
//! at once: a few hundred bytes of header can ask for tens of gigabytes.
//! The decoder does not say which kind it has before it allocates, so the
//! markers up to the first scan are read here.

/// How a JPEG is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Progressive (SOF2, SOF6, SOF10, SOF14).
    pub progressive: bool,
    /// Components of the frame (1 grey, 3 YCbCr, 4 CMYK).
    pub frame_components: u8,
    /// Components of the first scan; fewer than the frame's means the
    /// decoder buffers the whole image.
    pub first_scan_components: u8,
    /// An end-of-image marker follows the first scan. A file cut short has
    /// none: libjpeg would fill the missing rows with grey and report
    /// success.
    pub complete: bool,
}

impl Layout {
    /// Whether the decoder keeps every coefficient of the image in memory.
    pub fn buffers_whole_image(&self) -> bool {
        self.progressive || self.first_scan_components < self.frame_components
    }
}

/// Reads the markers from the start of image to the first scan.
pub fn read(bytes: &[u8]) -> Result<Layout, String> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err("no start-of-image marker".into());
    }
    let mut at = 2;
    let mut frame: Option<(bool, u8)> = None;
    loop {
        if bytes.get(at) != Some(&0xFF) {
            return Err(format!("expected a marker at byte {at}"));
        }
        // Any number of 0xFF fill bytes may precede a marker code.
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let Some(&code) = bytes.get(at) else {
            return Err("file ends before the first scan".into());
        };
        at += 1;
        match code {
            // Markers without a length: TEM and restart markers.
            0x01 | 0xD0..=0xD7 => continue,
            0xD9 => return Err("end of image before the first scan".into()),
            _ => {}
        }
        let length = match bytes.get(at..at + 2) {
            Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
            _ => return Err("file ends inside a marker".into()),
        };
        let segment = bytes
            .get(at + 2..at + length.max(2))
            .ok_or_else(|| format!("marker 0x{code:02X} at byte {at} runs past the end"))?;
        at += length.max(2);
        match code {
            // Start of frame, every kind but DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(code, 0xC4 | 0xC8 | 0xCC) => {
                let components = *segment.get(5).ok_or("short frame header")?;
                frame = Some((matches!(code, 0xC2 | 0xC6 | 0xCA | 0xCE), components));
            }
            0xDA => {
                let (progressive, frame_components) =
                    frame.ok_or("scan before the frame header")?;
                let first_scan_components = *segment.first().ok_or("short scan header")?;
                // Entropy-coded data never holds 0xFF 0xD9: a 0xFF there is
                // followed by 0x00 (stuffing) or a restart marker.
                let complete = bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]);
                return Ok(Layout {
                    progressive,
                    frame_components,
                    first_scan_components,
                    complete,
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::{jpeg, picture};

    #[test]
    fn a_baseline_jpeg_is_one_complete_interleaved_scan() {
        let layout = read(&jpeg(&picture(64, 48, 1), 80)).unwrap();
        assert_eq!(
            layout,
            Layout {
                progressive: false,
                frame_components: 3,
                first_scan_components: 3,
                complete: true,
            }
        );
        assert!(!layout.buffers_whole_image());
    }

    #[test]
    fn a_cut_jpeg_is_incomplete_and_garbage_is_refused() {
        let whole = jpeg(&picture(64, 48, 1), 80);
        let cut = &whole[..whole.len() - 100];
        assert!(!read(cut).unwrap().complete);
        assert!(read(&whole[..40]).is_err());
        assert!(read(b"\xFF\xD8\xFF\xC0\xFF\xFF").is_err());
        assert!(read(b"\xFF\xD8\x00").is_err());
        assert!(read(b"").is_err());
    }

    #[test]
    fn a_progressive_frame_buffers_the_whole_image() {
        // SOI, SOF2 (8 bit, 16x16, 3 components), SOS with one component.
        let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xC2, 0, 17, 8, 0, 16, 0, 16, 3];
        bytes.extend_from_slice(&[1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        bytes.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 0, 0]);
        let layout = read(&bytes).unwrap();
        assert!(layout.progressive && layout.buffers_whole_image());
        assert!(!layout.complete);
    }
}

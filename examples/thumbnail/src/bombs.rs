//! Hostile images: a few dozen bytes whose headers declare canvases that
//! would take gigabytes to decode. For tests and benchmarks of the memory
//! budget; each is a well-formed header, so a decoder that trusts it
//! allocates before it finds out the data is missing.

/// `(file name, bytes)` of one bomb per format the handler reads.
pub fn all() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("png-100000x100000.png", png(100_000, 100_000)),
        ("gif-65535x65535.gif", gif(65_535, 65_535)),
        ("bmp-60000x60000.bmp", bmp(60_000, 60_000)),
        ("webp-16383x16383.webp", webp_lossless(16_383, 16_383)),
        (
            "jpeg-progressive-65000x65000.jpg",
            jpeg(0xC2, 3, 65_000, 65_000),
        ),
        (
            "jpeg-cmyk-progressive-65000x65000.jpg",
            jpeg(0xC2, 4, 65_000, 65_000),
        ),
        (
            "jpeg-baseline-65000x65000.jpg",
            jpeg(0xC0, 3, 65_000, 65_000),
        ),
    ]
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

/// An 8-bit RGBA PNG of `width` x `height` whose data is one empty block.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8 bit, RGBA, deflate, no filter, no interlace
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A GIF whose screen and single frame are `width` x `height`.
pub fn gif(width: u16, height: u16) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&[0x80, 0, 0]); // global table of 2 colours
    out.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    out.push(0x2C); // image descriptor
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.push(0);
    out.extend_from_slice(&[2, 2, 0x4C, 0x01, 0]); // LZW: clear, end
    out.push(0x3B);
    out
}

/// A 24-bit BMP of `width` x `height` with no pixel data.
pub fn bmp(width: i32, height: i32) -> Vec<u8> {
    let mut out = b"BM".to_vec();
    out.extend_from_slice(&54u32.to_le_bytes()); // file size (a lie)
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&54u32.to_le_bytes()); // pixel data offset
    out.extend_from_slice(&40u32.to_le_bytes()); // BITMAPINFOHEADER
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // planes
    out.extend_from_slice(&24u16.to_le_bytes()); // bits per pixel
    out.extend_from_slice(&[0; 24]); // BI_RGB, sizes, resolution, palette
    out
}

/// A lossless WebP of `width` x `height` (at most 16384 a side) with
/// alpha, whose bit stream stops after the header.
pub fn webp_lossless(width: u32, height: u32) -> Vec<u8> {
    let bits = (width.clamp(1, 16_384) - 1) | ((height.clamp(1, 16_384) - 1) << 14) | (1 << 28); // alpha used; version 0
    let mut vp8l = vec![0x2F];
    vp8l.extend_from_slice(&bits.to_le_bytes());
    vp8l.extend_from_slice(&[0; 3]);
    let mut out = b"RIFF".to_vec();
    let riff_len = u32::try_from(4 + 8 + vp8l.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&riff_len.to_le_bytes());
    out.extend_from_slice(b"WEBPVP8L");
    out.extend_from_slice(&u32::try_from(vp8l.len()).unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&vp8l);
    out
}

/// A JPEG with frame marker `sof` (0xC0 baseline, 0xC2 progressive) of
/// `components` at `width` x `height`, a first scan of one component, no
/// entropy-coded data and an end-of-image marker.
pub fn jpeg(sof: u8, components: u8, width: u16, height: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8, 0xFF, sof];
    out.extend_from_slice(&(8 + 3 * u16::from(components)).to_be_bytes());
    out.push(8);
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&width.to_be_bytes());
    out.push(components);
    for id in 1..=components {
        out.extend_from_slice(&[id, 0x11, 0]);
    }
    // Baseline: every component in the first scan, as single-scan files do.
    let in_scan = if sof == 0xC0 { components } else { 1 };
    out.extend_from_slice(&[0xFF, 0xDA]);
    out.extend_from_slice(&(6 + 2 * u16::from(in_scan)).to_be_bytes());
    out.push(in_scan);
    for id in 1..=in_scan {
        out.extend_from_slice(&[id, 0]);
    }
    let spectral_end = if sof == 0xC0 { 63 } else { 0 };
    out.extend_from_slice(&[0, spectral_end, 0]);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

//! Fuzzing the image decoders (property-based, see `scripts/fuzz.sh`):
//! damaged images of every format the handler reads, and headers declaring
//! any canvas size, make a thumbnail or a clean error, never a panic, and
//! the process's peak resident memory (the kernel's VmHWM, reset before
//! each case, so libjpeg's C allocations count too) grows by no more than
//! the memory budget plus a fixed allowance.
//!
//! One test in this binary, so no other test's memory is counted (and it
//! runs its cases in a child process: see the test).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test reports failure"
)]

use std::io::Cursor;

use image::ImageFormat;
use proptest::prelude::*;
use thumbnail::{Config, ThumbnailError, bombs, make_thumbnail, samples};

const MIB: u64 = 1 << 20;
/// The budget the handler gets: what a 256 MiB worker with concurrency 4
/// would give each item.
const BUDGET: u64 = 48 * MIB;
/// The process's own growth beside the decode (allocator arenas, the
/// JPEG encoder, proptest's bookkeeping).
const ALLOWANCE: u64 = 24 * MIB;

/// A `status` field of this process in bytes (`VmHWM`, `VmRSS`).
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// Peak resident memory growth while `work` runs.
fn peak_growth(work: impl FnOnce()) -> u64 {
    // "5" resets the peak to the current resident size (Linux 4.0+).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status_bytes("VmRSS:");
    work();
    status_bytes("VmHWM:").saturating_sub(before)
}

/// Small valid images, one per format the handler reads.
fn seeds() -> Vec<Vec<u8>> {
    let picture = samples::picture(48, 32, 7);
    let mut seeds = vec![samples::jpeg(&picture, 80)];
    // With a colour profile in two APP2 segments, for the profile reader.
    let profile = samples::icc_profile(b"RGB ", 65_600);
    seeds.push(samples::with_icc_profile(&seeds[0], &profile));
    // Progressive, wide enough that a 256 px thumbnail decodes at 1/8
    // from the DC scans alone (the scans are cut out of the file first).
    let strip = samples::picture(2048, 96, 7);
    for chroma in [thumbnail::Chroma::Half, thumbnail::Chroma::Full] {
        seeds.push(samples::progressive_jpeg(&strip, 80, chroma, false));
    }
    for format in [
        ImageFormat::Png,
        ImageFormat::Gif,
        ImageFormat::Bmp,
        ImageFormat::WebP,
        ImageFormat::Tiff,
    ] {
        let mut out = Cursor::new(Vec::new());
        let image = image::DynamicImage::ImageRgb8(picture.clone());
        let image = if format == ImageFormat::WebP {
            // The WebP encoder writes lossless RGBA.
            image::DynamicImage::ImageRgba8(image.to_rgba8())
        } else {
            image
        };
        image.write_to(&mut out, format).unwrap();
        seeds.push(out.into_inner());
    }
    seeds
}

/// A header-only image of any format declaring `width` x `height`.
fn bomb() -> impl Strategy<Value = Vec<u8>> {
    (0u8..7, 1u32..70_000, 1u32..70_000).prop_map(|(kind, w, h)| match kind {
        0 => bombs::png(w, h),
        1 => bombs::gif(w.min(65_535) as u16, h.min(65_535) as u16),
        2 => bombs::bmp(w as i32, h as i32),
        3 => bombs::webp_lossless(w.min(16_383), h.min(16_383)),
        4 => bombs::jpeg(0xC0, 3, w.min(65_500) as u16, h.min(65_500) as u16),
        5 => bombs::jpeg(0xC2, 3, w.min(65_500) as u16, h.min(65_500) as u16),
        _ => bombs::jpeg(0xC2, 4, w.min(65_500) as u16, h.min(65_500) as u16),
    })
}

/// `seed` with bytes overwritten, inserted and the end cut off.
fn damaged(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..12),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(move |(flips, inserts, cut, truncate)| {
            let mut bytes = seed.clone();
            for (at, byte) in flips {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            for (at, byte) in inserts {
                let i = at.index(bytes.len() + 1);
                bytes.insert(i, byte);
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes
        })
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    let damaged_seeds: Vec<_> = seeds().into_iter().map(damaged).collect();
    prop_oneof![
        3 => prop::strategy::Union::new(damaged_seeds),
        2 => bomb(),
        1 => bomb().prop_flat_map(damaged),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

/// glibc keeps freed memory resident and raises its mmap threshold as it
/// goes, so a case could reuse what an earlier one freed and not show as
/// growth. The cases therefore run in a child process of this binary in
/// which every allocation of 64 KiB or more is mapped and unmapped on its
/// own (`MALLOC_MMAP_THRESHOLD_`, which also stops the threshold moving):
/// each case's big allocations count in its own peak.
#[test]
fn fuzz_damaged_images_and_any_canvas_stay_within_the_memory_budget() {
    const NAME: &str = "fuzz_damaged_images_and_any_canvas_stay_within_the_memory_budget";
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture", "--test-threads", "1"])
            .env("MALLOC_MMAP_THRESHOLD_", "65536")
            .status()
            .unwrap();
        assert!(status.success(), "the cases failed: see above");
        return;
    }
    let config = ProptestConfig {
        source_file: Some(file!()),
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let outcome = runner.run(&input(), |bytes| {
        let config = Config::default();
        let mut outcome = None;
        let growth = peak_growth(|| outcome = Some(make_thumbnail(&bytes, &config, BUDGET)));
        prop_assert!(
            growth <= BUDGET + ALLOWANCE,
            "peak resident memory grew by {} MiB (budget {} MiB) for {} bytes starting {:02x?}: {:?}",
            growth / MIB,
            BUDGET / MIB,
            bytes.len(),
            &bytes[..bytes.len().min(32)],
            outcome.as_ref().map(|o| o.as_ref().map(Vec::len)),
        );
        if let Some(Err(ThumbnailError::TooLarge {
            needed_mib,
            budget_mib,
            ..
        })) = outcome
        {
            prop_assert!(needed_mib > budget_mib);
        }
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

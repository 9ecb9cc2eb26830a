//! Colour profiles. A photograph in a wide-gamut space (Adobe RGB, Display
//! P3) carries an ICC profile that says how to read its numbers; a
//! thumbnail without it shows dull or shifted colours. Thumbnails therefore
//! carry their source's profile, as libvips does, when it describes the
//! thumbnail's own colour space (an RGB profile for RGB pixels, a grey one
//! for grey): a CMYK source's profile does not describe its RGB thumbnail.
//!
//! In a JPEG the profile is cut into APP2 segments of at most 65,519 bytes,
//! each tagged `ICC_PROFILE\0`, its sequence number (from 1) and the
//! count. A set with a gap, a repeat or disagreeing counts is ignored.

/// The tag that starts every APP2 segment of a profile.
pub const TAG: &[u8] = b"ICC_PROFILE\0";

/// The profile spread over `segments` (the bodies of a JPEG's APP2
/// markers, in file order; other APP2 uses are skipped), or `None` when
/// there is none or the set is malformed.
pub fn from_app2<'a>(segments: impl Iterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut parts: Vec<(u8, u8, &[u8])> = segments
        .filter_map(|s| s.strip_prefix(TAG))
        .filter_map(|s| match s {
            [seq, count, data @ ..] => Some((*seq, *count, data)),
            _ => None,
        })
        .collect();
    let count = parts.first()?.1;
    if count == 0 || parts.len() != usize::from(count) || parts.iter().any(|p| p.1 != count) {
        return None;
    }
    parts.sort_by_key(|p| p.0);
    if parts
        .iter()
        .zip(1..=count)
        .any(|(p, expected)| p.0 != expected)
    {
        return None;
    }
    let profile: Vec<u8> = parts.iter().flat_map(|p| p.2.iter().copied()).collect();
    (!profile.is_empty()).then_some(profile)
}

/// Whether `profile` describes pixels that are grey (`gray`) or RGB: a
/// device or colour-space profile (not a link, abstract or named-colour
/// one) whose data colour space is that, and whose header gives its own
/// length.
pub fn describes(profile: &[u8], gray: bool) -> bool {
    let want: &[u8] = if gray { b"GRAY" } else { b"RGB " };
    let size = profile
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes);
    size.is_some_and(|size| size as usize == profile.len())
        && matches!(
            profile.get(12..16),
            Some(b"scnr" | b"mntr" | b"prtr" | b"spac")
        )
        && profile.get(16..20) == Some(want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::icc_profile as profile;

    fn segment(seq: u8, count: u8, data: &[u8]) -> Vec<u8> {
        let mut s = TAG.to_vec();
        s.extend([seq, count]);
        s.extend_from_slice(data);
        s
    }

    #[test]
    fn segments_are_joined_in_sequence_order() {
        let p = profile(b"RGB ", 300);
        let (a, b) = p.split_at(100);
        let segments = [
            segment(2, 2, b),
            b"other APP2 use".to_vec(),
            segment(1, 2, a),
        ];
        assert_eq!(
            from_app2(segments.iter().map(Vec::as_slice)),
            Some(p.clone())
        );
        assert!(describes(&p, false) && !describes(&p, true));
        assert!(!describes(&profile(b"CMYK", 300), false));
        assert!(!describes(b"short", false));
        // A device link, and a header whose size disagrees.
        let mut link = p.clone();
        link[12..16].copy_from_slice(b"link");
        assert!(!describes(&link, false));
        assert!(!describes(&p[..299], false));
    }

    #[test]
    fn an_incomplete_or_inconsistent_set_is_ignored() {
        let p = profile(b"RGB ", 300);
        let (a, b) = p.split_at(100);
        let cases: [Vec<Vec<u8>>; 5] = [
            vec![segment(1, 2, a)],
            vec![segment(1, 2, a), segment(1, 2, b)],
            vec![segment(1, 2, a), segment(2, 3, b)],
            vec![segment(0, 0, a)],
            vec![TAG.to_vec()],
        ];
        for segments in cases {
            assert_eq!(from_app2(segments.iter().map(Vec::as_slice)), None);
        }
        assert_eq!(from_app2(std::iter::empty()), None);
    }
}

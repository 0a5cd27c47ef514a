//! Validation of `/image` and `/file` payloads: base64 that decodes, a decoded
//! size within the limit, and for images magic bytes of an accepted type.
//!
//! The size is checked from the encoded length *before* decoding, so a payload
//! over the limit costs no allocation. Payloads are relayed in their base64
//! form; the decoded bytes are only looked at and dropped.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Standard alphabet; padding optional, since hand-made payloads often lack it.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a payload was refused; `Display` names the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaError {
    BadBase64,
    Empty,
    TooLarge { size: u64, max: u64 },
    NotAnImage,
}

impl std::fmt::Display for MediaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MediaError::BadBase64 => f.write_str(
                "the data is not valid base64 (standard alphabet A-Z a-z 0-9 + /, optional = padding)",
            ),
            MediaError::Empty => f.write_str("the data is empty"),
            MediaError::TooLarge { size, max } => write!(
                f,
                "too large: {size} bytes ({}) decoded, the limit is {max} bytes ({})",
                crate::proto::human_size(*size),
                crate::proto::human_size(*max)
            ),
            MediaError::NotAnImage => f.write_str(
                "not an image this server accepts: PNG, JPEG, GIF, BMP or WebP (checked by the first bytes); send other files with /file",
            ),
        }
    }
}

impl MediaError {
    pub fn code(&self) -> &'static str {
        match self {
            MediaError::BadBase64 => "bad-base64",
            MediaError::Empty => "empty",
            MediaError::TooLarge { .. } => "too-large",
            MediaError::NotAnImage => "not-an-image",
        }
    }
}

/// What a valid payload turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub mime: &'static str,
    pub size: u64,
}

/// Upper bound of the decoded size of `len` base64 characters.
pub fn decoded_len_bound(len: usize) -> u64 {
    (len as u64).div_ceil(4) * 3
}

/// Checks a base64 payload; `image` requires an accepted image type.
pub fn check(data: &str, max: u64, image: bool) -> Result<Media, MediaError> {
    if data.is_empty() {
        return Err(MediaError::Empty);
    }
    let bound = decoded_len_bound(data.len());
    // The bound overshoots by at most 2 bytes (padding); decode to be exact
    // only when it could matter.
    if bound > max + 2 {
        return Err(MediaError::TooLarge { size: bound, max });
    }
    let bytes = B64.decode(data).map_err(|_| MediaError::BadBase64)?;
    let size = bytes.len() as u64;
    if size == 0 {
        return Err(MediaError::Empty);
    }
    if size > max {
        return Err(MediaError::TooLarge { size, max });
    }
    match (sniff_image(&bytes), image) {
        (Some(mime), _) => Ok(Media { mime, size }),
        (None, true) => Err(MediaError::NotAnImage),
        (None, false) => Ok(Media {
            mime: sniff_other(&bytes),
            size,
        }),
    }
}

/// The image type from magic bytes: PNG, JPEG, GIF, BMP or WebP.
pub fn sniff_image(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if b.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if b.starts_with(b"BM") && b.len() >= 26 {
        Some("image/bmp")
    } else if b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WEBP") {
        Some("image/webp")
    } else {
        None
    }
}

fn sniff_other(b: &[u8]) -> &'static str {
    if b.starts_with(b"%PDF-") {
        "application/pdf"
    } else if b.starts_with(b"PK\x03\x04") {
        "application/zip"
    } else if b.starts_with(&[0x1f, 0x8b]) {
        "application/gzip"
    } else if std::str::from_utf8(b).is_ok() {
        "text/plain"
    } else {
        "application/octet-stream"
    }
}

/// Encodes bytes the way clients are expected to send them.
pub fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn accepts_each_image_type() {
        let webp = b"RIFF\0\0\0\0WEBPVP8 ";
        let mut bmp = b"BM".to_vec();
        bmp.resize(40, 0);
        for (bytes, mime) in [
            (PNG.to_vec(), "image/png"),
            (vec![0xff, 0xd8, 0xff, 0xe0], "image/jpeg"),
            (b"GIF89a..".to_vec(), "image/gif"),
            (bmp, "image/bmp"),
            (webp.to_vec(), "image/webp"),
        ] {
            let m = check(&encode(&bytes), 1000, true).unwrap();
            assert_eq!(m.mime, mime);
            assert_eq!(m.size, bytes.len() as u64);
        }
    }

    #[test]
    fn refusals_name_the_reason() {
        assert_eq!(check("!!!!", 100, true), Err(MediaError::BadBase64));
        assert_eq!(check("", 100, true), Err(MediaError::Empty));
        assert_eq!(
            check(&encode(b"hello world"), 100, true),
            Err(MediaError::NotAnImage)
        );
        let big = encode(&[0u8; 300]);
        assert!(matches!(
            check(&big, 100, false),
            Err(MediaError::TooLarge { .. })
        ));
        // Exactly at the limit is fine.
        let mut exact = PNG.to_vec();
        exact.resize(100, 0);
        assert!(check(&encode(&exact), 100, true).is_ok());
        exact.push(0);
        assert!(matches!(
            check(&encode(&exact), 100, true),
            Err(MediaError::TooLarge { size: 101, .. })
        ));
    }

    #[test]
    fn unpadded_and_other_files() {
        let s = encode(b"plain text!");
        let unpadded = s.trim_end_matches('=');
        assert_eq!(check(unpadded, 100, false).unwrap().mime, "text/plain");
        assert_eq!(
            check(&encode(b"%PDF-1.7"), 100, false).unwrap().mime,
            "application/pdf"
        );
    }
}

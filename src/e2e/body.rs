//! What an envelope carries, as bytes: the plaintext inside both room (`E1.`)
//! and direct-message (`D1.`) envelopes. chatc(1), "ENVELOPE FORMAT", has the
//! layout: a version byte, a kind byte, the sender's clock (Unix ms, 8 bytes
//! big-endian), then the text, or a name and a MIME type behind a length byte
//! each and the file's bytes.
//!
//! [`decode`] takes bytes an authenticated peer chose: it never panics, and
//! returns `None` for anything but a whole, well-formed body.

/// The plaintext format's version byte.
const PLAIN_VERSION: u8 = 1;
const K_TEXT: u8 = b't';
const K_ACTION: u8 = b'a';
const K_IMAGE: u8 = b'i';
const K_FILE: u8 = b'f';
/// Names and MIME types are cut to what a length byte can say.
const SHORT_MAX: usize = 255;

/// What an envelope carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Text(String),
    Action(String),
    /// An image or other file: name, MIME type, bytes.
    Image {
        name: String,
        mime: String,
        data: Vec<u8>,
    },
    File {
        name: String,
        mime: String,
        data: Vec<u8>,
    },
}

/// `s` cut to at most [`SHORT_MAX`] bytes, at a character boundary.
fn short(s: &str) -> &str {
    let mut end = s.len().min(SHORT_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// The plaintext of `body` as sealed at `ts`.
pub fn encode(body: &Body, ts: u64) -> Vec<u8> {
    let mut p = vec![PLAIN_VERSION];
    let media = |p: &mut Vec<u8>, kind: u8, name: &str, mime: &str, data: &[u8]| {
        p.push(kind);
        p.extend_from_slice(&ts.to_be_bytes());
        for s in [short(name), short(mime)] {
            p.push(s.len() as u8);
            p.extend_from_slice(s.as_bytes());
        }
        p.extend_from_slice(data);
    };
    match body {
        Body::Text(t) | Body::Action(t) => {
            p.push(if matches!(body, Body::Text(_)) {
                K_TEXT
            } else {
                K_ACTION
            });
            p.extend_from_slice(&ts.to_be_bytes());
            p.extend_from_slice(t.as_bytes());
        }
        Body::Image { name, mime, data } => media(&mut p, K_IMAGE, name, mime, data),
        Body::File { name, mime, data } => media(&mut p, K_FILE, name, mime, data),
    }
    p
}

/// Reads `len u8 || bytes` as UTF-8.
fn short_str(p: &[u8]) -> Option<(String, &[u8])> {
    let (&n, rest) = p.split_first()?;
    let n = usize::from(n);
    if rest.len() < n {
        return None;
    }
    let (s, rest) = rest.split_at(n);
    Some((String::from_utf8(s.to_vec()).ok()?, rest))
}

/// A body and the time it was sealed, from its plaintext.
pub fn decode(p: &[u8]) -> Result<(Body, u64), BodyError> {
    let (&version, p) = p.split_first().ok_or(BodyError::Malformed)?;
    if version != PLAIN_VERSION {
        return Err(BodyError::Unknown);
    }
    let (&kind, p) = p.split_first().ok_or(BodyError::Malformed)?;
    if p.len() < 8 {
        return Err(BodyError::Malformed);
    }
    let (ts, p) = p.split_at(8);
    let ts = u64::from_be_bytes(ts.try_into().map_err(|_| BodyError::Malformed)?);
    let text = |p: &[u8]| String::from_utf8(p.to_vec()).map_err(|_| BodyError::Malformed);
    let body = match kind {
        K_TEXT => Body::Text(text(p)?),
        K_ACTION => Body::Action(text(p)?),
        K_IMAGE | K_FILE => {
            let (name, p) = short_str(p).ok_or(BodyError::Malformed)?;
            let (mime, data) = short_str(p).ok_or(BodyError::Malformed)?;
            let data = data.to_vec();
            if kind == K_IMAGE {
                Body::Image { name, mime, data }
            } else {
                Body::File { name, mime, data }
            }
        }
        _ => return Err(BodyError::Unknown),
    };
    Ok((body, ts))
}

/// Why an authenticated plaintext was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// A plaintext version or kind this build does not know (a newer
    /// sender): not shown, and the reader is told to update.
    Unknown,
    /// Lengths or UTF-8 that do not hold together.
    Malformed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_junk_is_refused() {
        for body in [
            Body::Text("hi ✓".into()),
            Body::Action("waves".into()),
            Body::Image {
                name: "c.png".into(),
                mime: "image/png".into(),
                data: vec![1, 2],
            },
            Body::File {
                name: String::new(),
                mime: "text/plain".into(),
                data: vec![],
            },
        ] {
            assert_eq!(decode(&encode(&body, 7)), Ok((body, 7)));
        }
        for junk in [&b""[..], b"\x01", b"\x01i1234567", b"\x01t12345678\xff"] {
            assert_eq!(decode(junk), Err(BodyError::Malformed), "{junk:?}");
        }
        // From a newer sender: a version or a kind not known here.
        for newer in [&b"\x02t12345678"[..], b"\x01z12345678"] {
            assert_eq!(decode(newer), Err(BodyError::Unknown), "{newer:?}");
        }
    }

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        let name = "é".repeat(200);
        let body = Body::File {
            name,
            mime: "x".into(),
            data: vec![],
        };
        let Ok((Body::File { name, .. }, _)) = decode(&encode(&body, 1)) else {
            panic!("does not decode");
        };
        assert_eq!(name.len(), 254);
    }
}

//! The browser client, embedded in the binary: one HTML page, one script,
//! one style sheet. The script and the style sheet are served under names
//! that carry a hash of their content, cached for a year (a new chatd
//! serves new names); the page itself is revalidated on every load.

use std::sync::OnceLock;

/// Nothing runs, loads or connects but what chatd itself served: no inline
/// script or style, no other origin; images only from `blob:` (files the
/// page decoded itself) and `data:`.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob: data:; connect-src 'self'; manifest-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/app.css");

/// One file the page is made of.
pub struct Asset {
    pub path: String,
    pub mime: &'static str,
    pub cache: &'static str,
    pub body: Vec<u8>,
    /// Hex of the first 8 bytes of SHA-256 of the body: the ETag, and part
    /// of the name of the cached files.
    pub hash: String,
}

fn hash(body: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, body);
    d.as_ref()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn cached(name: &str, ext: &str, mime: &'static str, body: &str) -> Asset {
    let hash = hash(body.as_bytes());
    Asset {
        path: format!("/{name}.{hash}.{ext}"),
        mime,
        cache: "public, max-age=31536000, immutable",
        body: body.as_bytes().to_vec(),
        hash,
    }
}

fn all() -> &'static [Asset] {
    static ASSETS: OnceLock<Vec<Asset>> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let script = cached("app", "js", "text/javascript; charset=utf-8", SCRIPT);
        let style = cached("app", "css", "text/css; charset=utf-8", STYLE);
        let page = INDEX
            .replace("{{SCRIPT}}", &script.path)
            .replace("{{STYLE}}", &style.path);
        let index = Asset {
            path: "/".into(),
            mime: "text/html; charset=utf-8",
            cache: "no-cache",
            hash: hash(page.as_bytes()),
            body: page.into_bytes(),
        };
        vec![index, script, style]
    })
}

/// The file served at `path`, if any.
pub fn find(path: &str) -> Option<&'static Asset> {
    let path = if path == "/index.html" { "/" } else { path };
    all().iter().find(|a| a.path == path)
}

/// Bytes the page weighs in all.
pub fn total_size() -> usize {
    all().iter().map(|a| a.body.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_its_files_by_hash_and_stays_small() {
        let index = find("/").expect("index");
        let text = String::from_utf8_lossy(&index.body);
        for a in all().iter().skip(1) {
            assert!(text.contains(&a.path), "{} not referenced", a.path);
            assert!(find(&a.path).is_some());
        }
        assert!(!text.contains("{{"), "placeholder left");
        // No inline script or style: the CSP forbids both.
        assert!(
            !text.contains("<script>") && !text.contains("style="),
            "inline code in the page"
        );
        assert!(
            total_size() < 200 * 1024,
            "page weighs {} bytes",
            total_size()
        );
    }
}

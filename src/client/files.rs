//! Names of received files, which the sender chose: whether one is safe to
//! save under, and the alternatives when it is taken.

/// Why a received file cannot be saved under the sender's name.
pub fn unsafe_name_reason(name: &str) -> Option<&'static str> {
    if name.is_empty() || name == "." || name == ".." {
        return Some("it is empty or a directory name");
    }
    if name.contains('/') || name.contains('\\') || name.contains("..") {
        return Some("it contains a path (/ \\ or ..)");
    }
    if name.starts_with('.') {
        return Some("it would be a hidden file");
    }
    if name.chars().any(crate::codec::is_forbidden_control)
        || name.chars().count() > crate::proto::FILE_NAME_MAX
    {
        return Some("it has control characters or is too long");
    }
    None
}

/// `name (1).ext`, `name (2).ext`, … for the n-th alternative.
pub fn numbered(name: &str, n: u32) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem} ({n}).{ext}"),
        _ => format!("{name} ({n})"),
    }
}

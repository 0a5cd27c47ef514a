//! Runs after the integration tests (Cargo runs test targets in name order:
//! `tests`, then `tests_summary`) and prints how many were skipped for want
//! of an outside program, and which, so a green run that skipped half the
//! suite is visible. The skips were written by `util::need` into a file of
//! this `cargo test` run (see `util::skip_file`).

use std::io::Write as _;
use std::path::Path;

fn main() {
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "skipped-{}.txt",
        std::os::unix::process::parent_id()
    ));
    let skipped = std::fs::read_to_string(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    let lines: Vec<&str> = skipped.lines().filter(|l| !l.is_empty()).collect();
    let mut err = std::io::stderr();
    if lines.is_empty() {
        let _ = writeln!(err, "\ntest summary: no test was skipped\n");
        return;
    }
    let _ = writeln!(
        err,
        "\ntest summary: {} {} skipped for want of an outside program (contrib/install-test-deps installs them all):",
        lines.len(),
        if lines.len() == 1 {
            "test was"
        } else {
            "tests were"
        }
    );
    for l in lines {
        let _ = writeln!(err, "  {l}");
    }
    let _ = writeln!(err);
}

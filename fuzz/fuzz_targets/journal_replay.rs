//! Arbitrary bytes as a journal: parsing finds every good frame (resyncing
//! past damage) without panicking, every damaged span lies inside the input,
//! every record it returns replays into a core whose invariants hold, and
//! snapshot → replay → snapshot is stable.
#![no_main]

use std::time::Instant;

use chatd::core::sim::SeededEntropy;
use chatd::core::{Core, CoreConfig};
use chatd::journal;
use libfuzzer_sys::fuzz_target;

fn core() -> Core {
    let cfg = CoreConfig {
        history_keep: 5,
        dm_keep: 3,
        max_rooms: 8,
        ..CoreConfig::default()
    };
    Core::new(cfg, Box::new(SeededEntropy(1)), Instant::now(), 0)
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = b"CHATDJ1\n".to_vec();
    bytes.extend_from_slice(data);
    let (records, damage) = journal::parse(&bytes);
    for d in &damage {
        assert!(d.offset as usize + d.dropped as usize <= bytes.len());
    }
    let mut c = core();
    for r in records {
        c.restore(r);
    }
    c.check_invariants().expect("replayed state is consistent");
    let snap = c.snapshot();
    let mut again = core();
    for r in snap.clone() {
        again.restore(r);
    }
    again.check_invariants().expect("restored snapshot is consistent");
    assert_eq!(again.snapshot(), snap);
});

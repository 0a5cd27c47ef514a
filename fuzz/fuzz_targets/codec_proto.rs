//! Arbitrary bytes through the line decoder (split into reads at points the
//! input chooses), every line through the command parser and the machine
//! line parser. No panic; decoded lines respect the limits; a parsed machine
//! line survives encode → parse unchanged after one normalisation.
#![no_main]

use chatd::codec::{Decoded, LineDecoder};
use chatd::proto::{Command, ServerLine};
use libfuzzer_sys::fuzz_target;

const MAX_LINE: usize = 64;
const MAX_BULK: usize = 300;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else { return };
    let step = usize::from(split % 17) + 1;
    let mut dec = LineDecoder::with_bulk(MAX_LINE, MAX_BULK);
    let mut lines = Vec::new();
    for chunk in bytes.chunks(step) {
        dec.feed(chunk, |d| lines.push(d));
        assert!(dec.buffered() <= MAX_BULK + 1, "decoder holds {}", dec.buffered());
    }
    for d in lines {
        let Decoded::Line(l) = d else { continue };
        assert!(l.len() <= MAX_BULK);
        assert!(!l.contains('\n') && !l.contains('\r'));
        let _ = Command::parse(&l);
        if let Some(parsed) = ServerLine::parse_machine(&l) {
            let once = parsed.encode_machine();
            let again = ServerLine::parse_machine(&once).expect("an encoded line parses");
            assert_eq!(again.encode_machine(), once);
        }
    }
});

//! Arbitrary bytes as one record: decode never panics, and whatever decodes
//! encodes back to exactly the same bytes (the format has one encoding).
#![no_main]

use chatd::record::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Record::decode(data) {
        assert_eq!(r.encode(), data);
        assert_eq!(Record::decode(&r.encode()), Ok(r));
    }
});

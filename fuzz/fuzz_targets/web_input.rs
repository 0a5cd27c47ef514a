//! Arbitrary bytes as a browser's: through the first-bytes sniffer, the
//! HTTP request parser, and the WebSocket frame decoder (split into reads
//! at points the input chooses). No panic; the decoder never passes on more
//! of a message than the limit, and a whole split and an unsplit feed give
//! the same events.
#![no_main]

use chatd::web::http::{self, Peer};
use chatd::web::ws::{Decoder, WsEvent};
use chatd::web::{WebConfig, sniff};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 300;

fn run(bytes: &[u8], step: usize) -> (Vec<String>, Option<u16>) {
    let mut d = Decoder::new(MAX);
    let mut out = Vec::new();
    let mut msg = 0usize;
    let mut buf = bytes.to_vec();
    for chunk in buf.chunks_mut(step) {
        let r = d.feed(chunk, &mut |e| {
            match &e {
                WsEvent::Text(t) => {
                    msg += t.len();
                    assert!(msg <= MAX, "a message past the limit");
                }
                WsEvent::EndOfLine => msg = 0,
                _ => {}
            }
            out.push(format!("{e:?}"));
        });
        if let Err(e) = r {
            return (out, Some(e.code));
        }
    }
    (out, None)
}

fn joined(events: Vec<String>) -> Vec<String> {
    // Text chunks split differently with the read size; compare whole.
    let mut out: Vec<String> = Vec::new();
    for e in events {
        if e.starts_with("Text(") && out.last().is_some_and(|l| l.starts_with("Text(")) {
            if let Some(last) = out.last_mut() {
                last.push_str(&e);
            }
        } else {
            out.push(e);
        }
    }
    out.into_iter().map(|e| if e.starts_with("Text(") { "Text".into() } else { e }).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else { return };
    let _ = sniff(bytes);
    let cfg = WebConfig {
        origins: vec![],
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ping_interval: chatd::web::PING_INTERVAL,
    };
    let _ = http::parse(bytes, Peer { ip: "127.0.0.1".parse().unwrap(), tls: split & 1 == 0 }, &cfg);
    let step = usize::from(split % 23) + 1;
    let (a, ea) = run(bytes, step);
    let (b, eb) = run(bytes, bytes.len().max(1));
    assert_eq!(ea, eb, "the verdict depends on the read size");
    if ea.is_none() {
        assert_eq!(joined(a), joined(b));
    }
});

//! chatd: a chat daemon anyone can join with `nc host 9999`.
//!
//! The crate is layered so that almost everything is testable without
//! sockets; nothing points upward:
//!
//! * [`telnet`] and [`codec`] — bytes to bounded, validated lines (the only
//!   place a peer's raw bytes are interpreted), telnet's commands taken out
//!   first;
//! * [`proto`] — commands a client sends and lines the server sends, with their
//!   human and machine (v1) encodings, and the shapes of end-to-end formats
//!   as the server checks them; shared with the client;
//! * [`media`] — checks on `/image` and `/file` payloads;
//! * [`record`] and [`journal`] — durable state changes, and the append-only
//!   file that keeps them across restarts and crashes;
//! * [`core`] — the sans-IO chat state machine: inputs in, outputs out, time
//!   and randomness passed in; [`core::sim`] drives it in memory. It decides
//!   what is journaled and what is shared with a cluster;
//! * [`server`] — the thin single-threaded mio reactor around the core, with
//!   its connections, startup, status listener, signals and systemd;
//! * [`nats`] — the bridge to a NATS cluster (`--cluster`), on a thread of its
//!   own; the core's side of it is [`core::cluster`];
//! * [`status`] — what the status listener answers (health, JSON stats,
//!   Prometheus metrics, the dashboard page), without I/O;
//! * [`tls`] — rustls configurations from PEM files, for chatd and chatc;
//! * [`config`] — the command line ([`config::Flags`]) and the validated
//!   settings the server runs with;
//! * [`logfile`] — the `--log-file` that SIGHUP reopens;
//! * [`random`] — the operating system's random generator, read here only;
//! * [`e2e`] — end-to-end encryption: room envelopes, identities, key
//!   bundles, direct-message envelopes (used by the client; the server never
//!   holds a key);
//! * [`client`] — the sans-IO core of the `chatc` client.
//!
//! The binaries in `src/bin/` only parse flags and call into this library:
//! `chatd`, `chatc` (the terminal front end over [`client`]) and
//! `chatd-bench` (load, comparison and abuse).

// Unsafe code is refused everywhere but `server::listenfd`, which documents
// why.
#![deny(unsafe_code)]

pub mod admin;
pub mod client;
pub mod codec;
pub mod config;
pub mod core;
pub mod e2e;
pub mod export;
#[cfg(test)]
mod heapcount;
#[cfg(test)]
#[global_allocator]
static HEAP: heapcount::Counting = heapcount::Counting;
pub mod journal;
pub mod logfile;
pub mod media;
pub mod nats;
pub mod proto;
pub mod random;
pub mod record;
pub mod server;
pub mod status;
pub mod telnet;
pub mod tls;
pub mod web;

//! chatd: a chat daemon anyone can join with `nc host 9999`.
//!
//! The crate is layered so that almost everything is testable without sockets:
//!
//! * [`codec`] — bytes to bounded, validated lines (the only place a peer's raw
//!   bytes are interpreted);
//! * [`proto`] — commands a client sends and lines the server sends, with their
//!   human and machine (v1) encodings; shared with the client;
//! * [`media`] — checks on `/image` and `/file` payloads;
//! * [`envelope`] — end-to-end encryption of room messages (AES-256-GCM),
//!   used by the client; the server only checks an envelope's shape;
//! * [`core`] — the sans-IO chat state machine: events in, outputs out, time
//!   and randomness passed in; [`core::sim`] drives it in memory;
//! * [`record`] and [`journal`] — durable state changes, and the append-only
//!   file that keeps them across restarts and crashes;
//! * [`cluster`] — the bridge to a NATS cluster (`--cluster`), on a thread
//!   of its own; the core's side of it is [`core::cluster`];
//! * [`server`] — the thin single-threaded mio reactor around the core;
//! * [`status`] — the optional HTTP status listener: health, JSON stats,
//!   Prometheus metrics and a live dashboard page;
//! * [`listenfd`] and [`notify`] — systemd socket activation and sd_notify;
//! * [`config`] — validated daemon settings, kept apart from the raw flags.
//!
//! * [`client`] — the sans-IO core of the `chatc` client.
//!
//! The binaries in `src/bin/` only parse flags and call into this library.

// Unsafe code is refused everywhere but `listenfd`, which documents why.
#![deny(unsafe_code)]

pub mod client;
pub mod codec;
pub mod config;
pub mod core;
pub mod e2e;
pub mod journal;
pub mod logfile;
pub mod media;
pub mod nats;
pub mod proto;
pub mod random;
pub mod record;
pub mod server;
pub mod status;
pub mod tls;

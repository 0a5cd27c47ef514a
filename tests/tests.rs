//! The one integration test binary: the real `chatd` on loopback, spoken to
//! as nc speaks to it. Shared helpers are in `util`; modules group tests by
//! what they exercise.

mod abuse;
mod browser;
mod client;
mod cluster;
mod docs;
mod e2e_dm;
mod everyday;
mod fanout;
mod journal;
mod limits;
mod moderation;
mod ops;
mod protocol;
mod regression;
mod tls;
mod trust;
mod util;
mod web;

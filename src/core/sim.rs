//! An in-memory harness around [`Core`]: a fake clock, seeded randomness, and
//! per-connection inboxes of decoded lines. Unit tests and the fuzz targets
//! drive whole conversations through it without sockets or sleeping.
//!
//! It keeps the core's contract as the reactor does: after every input it
//! drains every output, carrying each out in order ([`Sim::apply`]), and
//! checks the core's invariants. Its journal is the records the core asked
//! to persist, so [`Sim::restart`] shows exactly what a restart would keep.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::{ConnId, Core, CoreConfig, Disconnect, Entropy, Output, Refusal, run_hash_job};
use crate::codec::{Decoded, LineDecoder};
use crate::record::Record;

/// xorshift64*: deterministic, good enough to pick room codes in tests.
pub struct SeededEntropy(pub u64);

impl Entropy for SeededEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
        }
    }
}

pub struct Sim {
    pub core: Core,
    pub now: Instant,
    /// Every record the core asked to persist, in order: the simulated journal.
    pub journal: Vec<Record>,
    /// Every request for the cluster bridge, in order (cluster mode only).
    pub cluster: Vec<super::ToCluster>,
    cfg: CoreConfig,
    inbox: HashMap<ConnId, Vec<String>>,
    closed: HashSet<ConnId>,
    /// The prompt each connection would be shown after a burst of output.
    prompts: HashMap<ConnId, String>,
    decoders: HashMap<ConnId, LineDecoder>,
    next: ConnId,
    start: Instant,
    /// With `defer_hashes`, password jobs wait here for `run_hashes`.
    deferred: Option<Vec<super::HashJob>>,
}

impl Sim {
    pub fn new(cfg: CoreConfig) -> Sim {
        let now = Instant::now();
        Sim {
            core: Core::new(
                cfg.clone(),
                Box::new(SeededEntropy(0x9e37_79b9_7f4a_7c15)),
                now,
                1_700_000_000_000,
            ),
            now,
            journal: Vec::new(),
            cluster: Vec::new(),
            cfg,
            inbox: HashMap::new(),
            closed: HashSet::new(),
            prompts: HashMap::new(),
            decoders: HashMap::new(),
            next: 0,
            start: now,
            deferred: None,
        }
    }

    /// From now on, password jobs wait (as they do on the real hashing
    /// thread) until [`Sim::run_hashes`]: for tests of what happens while
    /// one is in flight.
    pub fn defer_hashes(&mut self) {
        self.deferred.get_or_insert_with(Vec::new);
    }

    /// Runs the waiting password jobs, in order.
    pub fn run_hashes(&mut self) {
        let jobs = self
            .deferred
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        for job in jobs {
            let outcome = run_hash_job(&job);
            self.core.handle_hash_done(job.id, outcome, self.now);
            self.pump();
        }
    }

    /// A new core rebuilt from the journal, as after a restart: every
    /// connection is gone, durable state is back.
    pub fn restart(&mut self) {
        let unix = 1_700_000_000_000 + self.now.duration_since(self.start).as_millis() as u64;
        let mut core = Core::new(self.cfg.clone(), Box::new(SeededEntropy(7)), self.now, unix);
        for r in self.journal.clone() {
            core.restore(r);
        }
        self.core = core;
        self.inbox.clear();
        self.decoders.clear();
        for c in 0..self.next {
            self.closed.insert(c);
        }
        if let Err(e) = self.core.check_invariants() {
            panic!("invariant broken after restart: {e}");
        }
    }

    /// Replaces the journal with a snapshot, as compaction does.
    pub fn compact(&mut self) {
        self.journal = self.core.snapshot();
    }

    /// Connects from `ip` and names itself, forgetting the welcome output.
    pub fn named_from(&mut self, nick: &str, ip: IpAddr) -> ConnId {
        let c = match self.connect_from(ip) {
            Ok(c) => c,
            Err(r) => panic!("connect refused: {r}"),
        };
        self.line(c, nick);
        self.take(c);
        c
    }

    pub fn connect(&mut self) -> ConnId {
        match self.connect_from(IpAddr::V4(Ipv4Addr::LOCALHOST)) {
            Ok(c) => c,
            Err(r) => panic!("connect refused: {r}"),
        }
    }

    pub fn connect_from(&mut self, ip: IpAddr) -> Result<ConnId, Refusal> {
        let conn = self.next;
        self.core.handle_connect(conn, ip, self.now)?;
        self.next += 1;
        self.closed.remove(&conn);
        self.pump();
        Ok(conn)
    }

    /// Connects, names itself, and forgets the welcome output.
    pub fn named(&mut self, nick: &str) -> ConnId {
        let c = self.connect();
        self.line(c, nick);
        self.take(c);
        c
    }

    /// Connects and names itself, keeping what it was sent.
    pub fn named_keep(&mut self, nick: &str) -> ConnId {
        let c = self.connect();
        self.take(c);
        self.line(c, nick);
        c
    }

    /// Feeds an event from the cluster bridge.
    pub fn cluster_event(&mut self, ev: super::FromCluster) {
        self.core.handle_cluster(ev, self.now);
        self.pump();
    }

    pub fn line(&mut self, conn: ConnId, line: &str) {
        self.core.handle_line(conn, line, self.now);
        self.pump();
    }

    /// Feeds raw bytes through the real line decoder, as the reactor does.
    pub fn bytes(&mut self, conn: ConnId, bytes: &[u8]) {
        let max = self.core.config().max_line;
        let bulk = self.core.config().max_image;
        let dec = self
            .decoders
            .entry(conn)
            .or_insert_with(|| LineDecoder::with_bulk(max, crate::codec::bulk_limit(bulk)));
        let mut items = Vec::new();
        dec.feed(bytes, |d| items.push(d));
        for d in items {
            match d {
                Decoded::Line(l) => self.core.handle_line(conn, &l, self.now),
                Decoded::Error(e) => self.core.handle_bad_line(conn, e, self.now),
            }
        }
        self.pump();
    }

    pub fn disconnect(&mut self, conn: ConnId, why: Disconnect) {
        self.core.handle_disconnect(conn, why);
        self.closed.insert(conn);
        self.pump();
    }

    /// Moves the clock and fires what is due.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.core.poll_timeout().is_some_and(|t| t <= self.now) {
            self.core.handle_timeout(self.now);
        }
        self.pump();
    }

    /// Lines received by `conn` since the last call, without newlines.
    pub fn take(&mut self, conn: ConnId) -> Vec<String> {
        self.inbox.remove(&conn).unwrap_or_default()
    }

    /// The prompt `conn` is shown after each burst, if it asked for one.
    pub fn prompt(&self, conn: ConnId) -> Option<&str> {
        self.prompts.get(&conn).map(String::as_str)
    }

    pub fn is_closed(&self, conn: ConnId) -> bool {
        self.closed.contains(&conn)
    }

    fn deliver(&mut self, conn: ConnId, data: &[u8]) {
        assert!(
            !self.closed.contains(&conn),
            "output after close for {conn}"
        );
        let text = String::from_utf8_lossy(data);
        for l in text.split_terminator('\n') {
            self.inbox.entry(conn).or_default().push(l.to_string());
        }
    }

    /// Drains the core, carrying out each output as the reactor would, then
    /// checks the invariants.
    fn pump(&mut self) {
        while let Some(o) = self.core.poll_output() {
            self.apply(o);
        }
        if let Err(e) = self.core.check_invariants() {
            panic!("invariant broken: {e}");
        }
    }

    /// Carries out one output. No wildcard arm: a new kind of output does
    /// not compile until the simulator (and the reactor) handle it.
    pub fn apply(&mut self, o: Output) {
        match o {
            Output::Send { conn, data } => self.deliver(conn, &data),
            Output::Fanout(f) => {
                for (conn, data) in f.deliveries() {
                    self.deliver(conn, data);
                }
            }
            Output::Close { conn } => {
                self.closed.insert(conn);
            }
            Output::Prompt { conn, prompt } => match prompt {
                Some(p) => {
                    self.prompts
                        .insert(conn, String::from_utf8_lossy(&p).into_owned());
                }
                None => {
                    self.prompts.remove(&conn);
                }
            },
            Output::Persist(r) => self.journal.push(r),
            Output::Cluster(req) => self.cluster.push(req),
            // Hashing runs inline here; its outcome may produce more output,
            // drained by the caller's loop.
            Output::Hash(job) => match self.deferred.as_mut() {
                Some(waiting) => waiting.push(job),
                None => {
                    let outcome = run_hash_job(&job);
                    self.core.handle_hash_done(job.id, outcome, self.now);
                }
            },
        }
    }
}

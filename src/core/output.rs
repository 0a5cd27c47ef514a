//! What the core asks the reactor to do, and the one queue it asks through.
//!
//! Every line a connection is sent is encoded here, once per [`Format`]: a
//! line for a crowd becomes one reference-counted buffer per format that all
//! its recipients share, and a room line becomes a single [`Output::Fanout`]
//! holding the room's shared member list (see [`super::members`]).

use std::collections::VecDeque;
use std::rc::Rc;

use super::ToCluster;
use super::members::{Member, Members};
use super::passwords::HashJob;
use crate::proto::{Format, ServerLine};
use crate::record::Record;

/// The reactor's handle for a connection (its slab key).
pub type ConnId = usize;

/// An encoded line, shared by every recipient: one thin pointer.
///
/// Each recipient's output queue holds one of these per line until the
/// socket takes it, so in a burst into a big room the queues hold a slot per
/// recipient per line (4,096 slots each at the peak of the benchmark's
/// fan-out). `Rc<[u8]>` is a fat pointer, 16 bytes a slot; behind a second
/// box it is 8, which halves the memory those queues grow into, the page
/// faults of growing them and the stores of filling them (issue 21). The
/// extra indirection is paid once per `writev` slot on a header every
/// recipient shares, so it stays in cache.
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(Rc<Box<[u8]>>);

impl Bytes {
    /// The same buffer (not merely equal bytes).
    pub fn ptr_eq(a: &Bytes, b: &Bytes) -> bool {
        Rc::ptr_eq(&a.0, &b.0)
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes(Rc::new(v.into_boxed_slice()))
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Bytes {
        Bytes(Rc::new(Box::from(v)))
    }
}

impl From<String> for Bytes {
    fn from(s: String) -> Bytes {
        Bytes::from(s.into_bytes())
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

/// Something the core wants the reactor to do. The reactor (and the
/// simulator, `super::sim`) must handle every variant: both match on it
/// without a wildcard, so a new variant does not compile until they do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Queue these bytes on the connection.
    Send { conn: ConnId, data: Bytes },
    /// Queue one line on every connection of a shared member list.
    Fanout(Fanout),
    /// Flush what is queued, then close the connection. The core has already
    /// forgotten it; do not call `handle_disconnect` for it.
    Close { conn: ConnId },
    /// Append this to the journal; it is committed before any output of the
    /// same loop iteration is flushed. The core decides what is journaled.
    Persist(Record),
    /// Hash or verify a password off the event loop, then hand the outcome
    /// to `Core::handle_hash_done`.
    Hash(HashJob),
    /// From now on, write these bytes (a short `[#room] ` prompt, no
    /// newline) after each burst of output to the connection; `None`: no
    /// prompt. A burst is what one loop turn queued for it.
    Prompt { conn: ConnId, prompt: Option<Bytes> },
    /// Hand this to the cluster bridge (cluster mode only). The core decides
    /// what is shared; a request the bridge cannot take goes back to the
    /// core as `FromCluster::Refused`.
    Cluster(ToCluster),
}

/// One line for every member of a room, as one output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fanout {
    /// The room's member list when the line was sent (shared, not copied).
    pub members: Rc<Vec<Member>>,
    /// The line in each format; `None` where no member reads that format.
    pub human: Option<Bytes>,
    pub machine: Option<Bytes>,
    pub stamped: Option<Bytes>,
    /// Left out if it reads a human format: it typed the line (and did not
    /// ask for its own lines back with `/set echo on`).
    pub skip_human: Option<ConnId>,
    /// Left out whatever they read: they ignore the sender (`/ignore`).
    /// Empty, and unallocated, almost always.
    pub skip: Vec<ConnId>,
}

impl Fanout {
    /// What each recipient gets, in member order.
    pub fn deliveries(&self) -> impl Iterator<Item = (ConnId, &Bytes)> + '_ {
        self.members.iter().filter_map(move |m| {
            let (conn, f) = (m.conn(), m.format());
            if f.is_human() && Some(conn) == self.skip_human {
                return None;
            }
            if !self.skip.is_empty() && self.skip.contains(&conn) {
                return None;
            }
            let data = match f {
                Format::Human => self.human.as_ref(),
                Format::Machine => self.machine.as_ref(),
                Format::Stamped => self.stamped.as_ref(),
            };
            data.map(|d| (conn, d))
        })
    }
}

/// A line encoded lazily, at most once per format.
pub(super) struct Shared<'a> {
    line: &'a ServerLine,
    /// Unix ms, for the stamp of a line that carries no time of its own.
    clock: u64,
    human: Option<Bytes>,
    machine: Option<Bytes>,
    stamped: Option<Bytes>,
}

impl<'a> Shared<'a> {
    pub(super) fn new(line: &'a ServerLine, clock: u64) -> Self {
        Shared {
            line,
            clock,
            human: None,
            machine: None,
            stamped: None,
        }
    }

    pub(super) fn get(&mut self, f: Format) -> Bytes {
        let slot = match f {
            Format::Human => &mut self.human,
            Format::Machine => &mut self.machine,
            Format::Stamped => &mut self.stamped,
        };
        slot.get_or_insert_with(|| Bytes::from(self.line.encode_at(f, self.clock)))
            .clone()
    }
}

/// The queue of outputs, drained by `Core::poll_output`.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    queue: VecDeque<Output>,
    /// Unix ms of the input being handled: the time stamped lines without
    /// one of their own are shown at.
    clock: u64,
}

impl Outbox {
    pub(super) fn set_clock(&mut self, unix_ms: u64) {
        self.clock = unix_ms;
    }

    pub(super) fn clock(&self) -> u64 {
        self.clock
    }

    pub(super) fn pop(&mut self) -> Option<Output> {
        self.queue.pop_front()
    }

    /// `line`, encoded for one connection.
    pub(super) fn send(&mut self, conn: ConnId, format: Format, line: &ServerLine) {
        let data = Bytes::from(line.encode_at(format, self.clock));
        self.queue.push_back(Output::Send { conn, data });
    }

    /// Already encoded bytes (a [`Shared`] line) for one connection.
    pub(super) fn send_bytes(&mut self, conn: ConnId, data: Bytes) {
        self.queue.push_back(Output::Send { conn, data });
    }

    /// `line` for every member, encoded once per format someone reads;
    /// returns how many it reaches.
    pub(super) fn fanout(
        &mut self,
        members: &Members,
        line: &ServerLine,
        skip_human: Option<ConnId>,
        skip: Vec<ConnId>,
    ) -> usize {
        let clock = self.clock;
        let encode = |f| {
            members
                .reads(f)
                .then(|| Bytes::from(line.encode_at(f, clock)))
        };
        let (human, machine) = (encode(Format::Human), encode(Format::Machine));
        let stamped = encode(Format::Stamped);
        let skipped =
            skip_human.is_some_and(|c| members.format_of(c).is_some_and(Format::is_human));
        let ignored = skip.len();
        self.queue.push_back(Output::Fanout(Fanout {
            members: members.shared(),
            human,
            machine,
            stamped,
            skip_human,
            skip,
        }));
        members.len() - usize::from(skipped) - ignored
    }

    pub(super) fn prompt(&mut self, conn: ConnId, text: Option<String>) {
        let prompt = text.map(Bytes::from);
        self.queue.push_back(Output::Prompt { conn, prompt });
    }

    pub(super) fn close(&mut self, conn: ConnId) {
        self.queue.push_back(Output::Close { conn });
    }

    pub(super) fn persist(&mut self, rec: Record) {
        self.queue.push_back(Output::Persist(rec));
    }

    pub(super) fn hash(&mut self, job: HashJob) {
        self.queue.push_back(Output::Hash(job));
    }

    pub(super) fn cluster(&mut self, req: ToCluster) {
        self.queue.push_back(Output::Cluster(req));
    }
}

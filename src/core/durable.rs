//! Rebuilding state from journal records, and writing live state back out as
//! records for compaction.
//!
//! [`Core::restore`] must accept any sequence of records, including ones a
//! damaged or older journal could hold: a record that does not fit (a topic
//! for a room that is not public, a bio for an unknown account) is skipped,
//! never trusted to be consistent. [`Core::snapshot`] is the inverse:
//! restoring a snapshot into a fresh core gives the same durable state.

use std::rc::Rc;

use super::accounts::{Account, pair, push_capped};
use super::{Core, fold};
use crate::proto::{RoomRef, ServerLine};
use crate::record::Record;

impl Core {
    /// Applies one replayed record. Produces no output.
    pub fn restore(&mut self, rec: Record) {
        match rec {
            Record::Message { line } => {
                let Some(line) = ServerLine::parse_machine(&line) else {
                    return;
                };
                let (room, ts) = match &line {
                    ServerLine::Msg { room, ts, .. }
                    | ServerLine::Action { room, ts, .. }
                    | ServerLine::Upload { room, ts, .. }
                    | ServerLine::Encrypted { room, ts, .. } => (room.clone(), *ts),
                    _ => return,
                };
                let Some(key) = self.restore_room(&room) else {
                    return;
                };
                let keep = self.cfg.history_keep;
                if let Some(r) = self.rooms.get_mut(&key) {
                    r.last_active = r.last_active.max(ts);
                    push_capped(&mut r.history, Rc::new(line), keep);
                }
            }
            Record::Topic { room, text } => {
                if let Some(key) = self.restore_room(&room)
                    && let Some(r) = self.rooms.get_mut(&key)
                {
                    r.topic = text;
                }
            }
            Record::RoomOwned { room, owner, .. } => {
                if let Some(key) = self.restore_room(&room)
                    && let Some(r) = self.rooms.get_mut(&key).filter(|r| !r.permanent)
                {
                    r.owner = Some(owner);
                }
            }
            Record::RoomGone { room } => {
                if let Ok(r @ RoomRef::Public(_)) = RoomRef::parse(&room) {
                    let key = r.key();
                    if self.rooms.get(&key).is_some_and(|r| !r.permanent) {
                        self.rooms.remove(&key);
                    }
                }
            }
            Record::Account {
                nick,
                salt,
                hash,
                iterations,
                created,
            } => {
                if crate::proto::valid_nick(&nick) {
                    let account = Account {
                        nick: nick.clone(),
                        salt,
                        hash,
                        iterations,
                        created,
                        bio: String::new(),
                        key: String::new(),
                    };
                    self.accounts.insert(fold(&nick), account);
                }
            }
            Record::Bio { nick, text } => {
                if let Some(a) = self.accounts.get_mut(&fold(&nick)) {
                    a.bio = text;
                }
            }
            Record::Dm {
                from,
                to,
                ts,
                text,
                pending,
            } => {
                let line = ServerLine::Dm {
                    from: from.clone(),
                    to: to.clone(),
                    ts,
                    text,
                };
                let cap = self.cfg.dm_keep;
                if pending {
                    push_capped(self.pending.entry(fold(&to)).or_default(), line, cap);
                } else {
                    push_capped(
                        self.dms.entry(pair(&from, &to)).or_default(),
                        Rc::new(line),
                        cap,
                    );
                }
            }
            Record::DmDelivered { to } => {
                self.pending.remove(&fold(&to));
            }
            Record::Key { nick, bundle } => {
                if let Some(a) = self.accounts.get_mut(&fold(&nick)) {
                    a.key = bundle;
                }
            }
        }
    }

    /// The key of a public room named `name`, created empty if needed.
    fn restore_room(&mut self, name: &str) -> Option<String> {
        let r @ RoomRef::Public(_) = RoomRef::parse(name).ok()? else {
            return None;
        };
        let key = r.key();
        if !self.rooms.contains_key(&key) {
            let room = self.new_room(&r);
            self.rooms.insert(key.clone(), room);
        }
        Some(key)
    }

    /// Live durable state as records, in an order `restore` accepts.
    pub fn snapshot(&self) -> Vec<Record> {
        let mut out = Vec::new();
        let mut accounts: Vec<&Account> = self.accounts.values().collect();
        accounts.sort_by_key(|a| (a.created, fold(&a.nick)));
        for a in accounts {
            out.push(Record::Account {
                nick: a.nick.clone(),
                salt: a.salt.clone(),
                hash: a.hash.clone(),
                iterations: a.iterations,
                created: a.created,
            });
            if !a.bio.is_empty() {
                out.push(Record::Bio {
                    nick: a.nick.clone(),
                    text: a.bio.clone(),
                });
            }
            if !a.key.is_empty() {
                out.push(Record::Key {
                    nick: a.nick.clone(),
                    bundle: a.key.clone(),
                });
            }
        }
        let mut rooms: Vec<_> = self.rooms.values().filter(|r| !r.private).collect();
        rooms.sort_by_key(|r| fold(&r.name));
        for r in rooms {
            if let Some(owner) = &r.owner {
                out.push(Record::RoomOwned {
                    room: r.name.clone(),
                    owner: owner.clone(),
                    ts: 0,
                });
            }
            if !r.topic.is_empty() {
                out.push(Record::Topic {
                    room: r.name.clone(),
                    text: r.topic.clone(),
                });
            }
            for line in &r.history {
                out.push(Record::Message {
                    line: line.encode_machine(),
                });
            }
        }
        let dm_record = |l: &ServerLine, pending: bool| match l {
            ServerLine::Dm { from, to, ts, text } => Some(Record::Dm {
                from: from.clone(),
                to: to.clone(),
                ts: *ts,
                text: text.clone(),
                pending,
            }),
            _ => None,
        };
        let mut convs: Vec<_> = self.dms.iter().collect();
        convs.sort_by(|a, b| a.0.cmp(b.0));
        for (_, lines) in convs {
            out.extend(lines.iter().filter_map(|l| dm_record(l, false)));
        }
        let mut pend: Vec<_> = self.pending.iter().collect();
        pend.sort_by(|a, b| a.0.cmp(b.0));
        for (_, lines) in pend {
            out.extend(lines.iter().filter_map(|l| dm_record(l, true)));
        }
        out
    }
}

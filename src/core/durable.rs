//! Rebuilding state from journal records, and writing live state back out as
//! records for compaction.
//!
//! [`Core::restore`] must accept any sequence of records, including ones a
//! damaged or older journal could hold: a record that does not fit (a topic
//! for a room that is not public, a bio for an unknown account) is skipped,
//! never trusted to be consistent. Every record passes the rules a socket's
//! line passes (no control, escape or bidi characters; names valid; sizes in
//! bounds; password iterations bounded), so a crafted journal frame, or a
//! record from another node (which arrives here too), can neither paint an
//! nc user's terminal nor hold the hashing thread for minutes.
//! [`Core::snapshot`] is the inverse: restoring a snapshot into a fresh
//! core gives the same durable state.

use std::rc::Rc;

use super::Core;
use super::accounts::Account;
use super::commands::SERVER_WIDE;
use super::passwords::{HASH_LEN, MAX_HASH_ITERATIONS, SALT_LEN};
use crate::codec::is_forbidden_control;
use crate::config::MIN_HASH_ITERATIONS;
use crate::proto::{RoomRef, ServerLine, fold};
use crate::record::Record;

impl Core {
    /// Applies one replayed record; produces no output. False if the record
    /// was skipped (it does not fit the state, or is malformed).
    pub fn restore(&mut self, rec: Record) -> bool {
        if !acceptable(&rec) {
            return false;
        }
        match rec {
            Record::Message { line } => {
                let Some(line) = ServerLine::parse_foreign(&line) else {
                    return false;
                };
                let room = match &line {
                    ServerLine::Msg { room, .. }
                    | ServerLine::Action { room, .. }
                    | ServerLine::Upload { room, .. }
                    | ServerLine::Encrypted { room, .. } => room.clone(),
                    _ => return false,
                };
                let Some(key) = self.rooms.ensure_public(&room) else {
                    return false;
                };
                self.rooms.remember(&key, Rc::new(line));
                true
            }
            Record::Topic { room, text } => match self.rooms.ensure_public(&room) {
                Some(key) => {
                    self.rooms.set_topic(&key, text);
                    true
                }
                None => false,
            },
            Record::RoomOwned { room, owner, .. } => self
                .rooms
                .ensure_public(&room)
                .is_some_and(|key| self.rooms.set_owner(&key, owner)),
            Record::RoomGone { room } => {
                let Ok(r @ RoomRef::Public(_)) = RoomRef::parse(&room) else {
                    return false;
                };
                let key = r.key();
                if self.rooms.get(&key).is_some_and(|r| !r.permanent()) {
                    self.rooms.remove(&key);
                    return true;
                }
                false
            }
            Record::Account {
                nick,
                salt,
                hash,
                iterations,
                created,
            } => {
                if !crate::proto::valid_nick(&nick) {
                    return false;
                }
                let key = fold(&nick);
                let account = Account::new(nick, salt, hash, iterations, created);
                self.accounts.insert(key, account);
                true
            }
            Record::Bio { nick, text } => self.accounts.set_bio(&fold(&nick), text),
            Record::AccountGone { nick } => self.account_gone(&fold(&nick)),
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
                if pending {
                    self.dms.hold(&to, line);
                } else {
                    self.dms.keep(&from, &to, Rc::new(line));
                }
                true
            }
            Record::DmDelivered { to } => {
                self.dms.take_pending(&to);
                true
            }
            Record::Key { nick, bundle } => self.accounts.set_key(&fold(&nick), bundle).is_some(),
            Record::Settings { nick, on } => self
                .accounts
                .set_settings(&fold(&nick), super::settings::Settings::from_words(&on)),
            Record::Ignore { nick, whom, on } => self
                .accounts
                .get_mut(&fold(&nick))
                .map(|a| a.set_ignore(&fold(&whom), on))
                .is_some(),
            Record::Moderation {
                room,
                action,
                by,
                whom,
                until,
                reason,
                ..
            } if room == SERVER_WIDE => self.apply_server_ban(&action, &whom, until, &by, &reason),
            Record::Moderation {
                room,
                action,
                by,
                whom,
                until,
                reason,
                at,
                mode,
            } => match self.rooms.ensure_public(&room) {
                Some(key) => self.apply_moderation(
                    &key,
                    &super::commands::Act {
                        action: &action,
                        by: &by,
                        whom: &whom,
                        until,
                        reason: &reason,
                        at,
                        mode,
                    },
                ),
                None => false,
            },
        }
    }

    /// Live durable state as records, in an order `restore` accepts.
    pub fn snapshot(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for a in self.accounts.by_age() {
            out.push(a.record());
            if !a.bio().is_empty() {
                out.push(Record::Bio {
                    nick: a.nick().to_string(),
                    text: a.bio().to_string(),
                });
            }
            if !a.key().is_empty() {
                out.push(Record::Key {
                    nick: a.nick().to_string(),
                    bundle: a.key().to_string(),
                });
            }
            for whom in a.ignores() {
                out.push(Record::Ignore {
                    nick: a.nick().to_string(),
                    whom: whom.clone(),
                    on: true,
                });
            }
            if a.settings() != super::settings::Settings::default() {
                out.push(Record::Settings {
                    nick: a.nick().to_string(),
                    on: a.settings().to_words(),
                });
            }
        }
        let mut rooms: Vec<_> = self
            .rooms
            .iter()
            .map(|(_, r)| r)
            .filter(|r| !r.private())
            .collect();
        rooms.sort_by(|a, b| crate::proto::cmp_folded(a.name(), b.name()));
        for r in rooms {
            if let Some(owner) = r.owner() {
                out.push(Record::RoomOwned {
                    room: r.name().to_string(),
                    owner: owner.to_string(),
                    ts: 0,
                });
            }
            if !r.topic().is_empty() {
                out.push(Record::Topic {
                    room: r.name().to_string(),
                    text: r.topic().to_string(),
                });
            }
            for line in r.history() {
                out.push(Record::Message {
                    line: line.encode_machine(),
                });
            }
        }
        for (l, pending) in self.dms.all() {
            if let ServerLine::Dm { from, to, ts, text } = l {
                out.push(Record::Dm {
                    from: from.clone(),
                    to: to.clone(),
                    ts: *ts,
                    text: text.clone(),
                    pending,
                });
            }
        }
        // After the rooms (and their owners), which moderation refers to.
        self.moderation_snapshot(&mut out);
        self.server_ban_snapshot(&mut out);
        out
    }
}

/// Free text a user could have typed: no control, escape or bidi character,
/// at most `max` characters.
fn clean_text(s: &str, max: usize) -> bool {
    s.chars().count() <= max && !s.chars().any(|c| is_forbidden_control(c) || c == '\t')
}

/// The checks a record passes before it is applied (room lines are checked
/// as they are parsed, by `ServerLine::parse_foreign`).
fn acceptable(rec: &Record) -> bool {
    use crate::proto::{TOPIC_MAX, valid_nick};
    match rec {
        Record::Message { .. } | Record::RoomGone { .. } => true,
        Record::Topic { text, .. } => clean_text(text, TOPIC_MAX),
        Record::RoomOwned { owner, .. } => valid_nick(owner),
        Record::Account {
            nick,
            salt,
            hash,
            iterations,
            ..
        } => {
            valid_nick(nick)
                && salt.len() == SALT_LEN
                && hash.len() == HASH_LEN
                && (MIN_HASH_ITERATIONS..=MAX_HASH_ITERATIONS).contains(iterations)
        }
        Record::Bio { nick, text } => {
            valid_nick(nick) && clean_text(text, super::commands::BIO_MAX)
        }
        Record::Dm { from, to, text, .. } => {
            valid_nick(from) && valid_nick(to) && clean_text(text, usize::MAX)
        }
        Record::DmDelivered { to } => valid_nick(to),
        Record::Key { nick, bundle } => {
            valid_nick(nick) && (bundle.is_empty() || crate::proto::shapes::bundle_ok(bundle))
        }
        Record::Settings { nick, on } => valid_nick(nick) && clean_text(on, 200),
        Record::Ignore { nick, whom, .. } => valid_nick(nick) && valid_nick(whom),
        Record::AccountGone { nick } => valid_nick(nick),
        Record::Moderation {
            action,
            by,
            whom,
            reason,
            mode,
            ..
        } => {
            (1..=3).contains(mode)
                && clean_text(action, 16)
                && clean_text(by, crate::proto::NICK_MAX)
                && clean_text(whom, 80)
                && clean_text(reason, crate::proto::REASON_MAX * 4)
        }
    }
}

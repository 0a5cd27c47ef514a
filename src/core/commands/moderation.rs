//! Room moderation (issue 18, first part): operators named by an owner,
//! `/kick`, `/ban` and `/mute` (with durations) and their lifting, `/bans`,
//! `/modlog`, and the topic of an owned room locked to its moderators.
//!
//! Who may do what goes by rank, and rank by account, never by nick: a
//! server admin (`--admin`, logged in) outranks a room's owner, who
//! outranks its operators, who outrank everyone else; a moderator acts only
//! on those below. Every action is announced in the room, kept in its
//! moderation log and journaled (not for private rooms, which leave no
//! trace).

use std::net::IpAddr;
use std::time::Instant;

use super::super::moderation::{Entry, Restriction, Target, parse_duration};
use super::super::sessions::addr_key;
use super::super::{ConnId, Core, plural};
use crate::proto::{self, ModAction, RoomRef, ServerLine, fold};
use crate::record::Record;

/// Ranks: who outranks whom.
const MEMBER: u8 = 0;
const OPERATOR: u8 = 1;
const OWNER: u8 = 2;
const ADMIN: u8 = 3;

fn rank_name(rank: u8) -> &'static str {
    match rank {
        ADMIN => "a server admin",
        OWNER => "the owner",
        OPERATOR => "an operator",
        _ => "a member",
    }
}

/// One moderation change, as applied live and from the journal.
pub(in crate::core) struct Act<'a> {
    pub(in crate::core) action: &'a str,
    pub(in crate::core) by: &'a str,
    pub(in crate::core) whom: &'a str,
    pub(in crate::core) until: u64,
    pub(in crate::core) reason: &'a str,
    pub(in crate::core) at: u64,
    pub(in crate::core) mode: u8,
}

impl Core {
    /// The folded account `conn` is logged in as, if any.
    fn account_of(&self, conn: ConnId) -> Option<String> {
        self.sessions
            .get(conn)
            .filter(|c| c.logged_in())
            .and_then(|c| c.nick().map(fold))
    }

    fn account_rank(&self, account: Option<&str>, key: &str) -> u8 {
        let Some(a) = account else {
            return MEMBER;
        };
        if self.cfg.admins.iter().any(|x| x == a) {
            return ADMIN;
        }
        let Some(room) = self.rooms.get(key) else {
            return MEMBER;
        };
        if room.owner().map(fold).as_deref() == Some(a) {
            OWNER
        } else if room.rules().is_op(a) {
            OPERATOR
        } else {
            MEMBER
        }
    }

    /// The rank of `conn` in the room `key`.
    pub(in crate::core) fn rank(&self, conn: ConnId, key: &str) -> u8 {
        self.account_rank(self.account_of(conn).as_deref(), key)
    }

    /// True if `conn` may set the topic of `key`: anyone in a room nobody
    /// owns, its moderators in an owned one.
    pub(in crate::core) fn may_set_topic(&self, conn: ConnId, key: &str) -> bool {
        let owned = self.rooms.get(key).is_some_and(|r| r.owner().is_some());
        !owned || self.rank(conn, key) >= OPERATOR
    }

    /// `conn` may not join `key`: the ban that says so, for the error.
    /// Bans and mutes do not hold for the room's moderators (a teacher who
    /// bans a pupil's address behind the school's one address keeps her
    /// room), and hold for an account's session under any nick.
    pub(in crate::core) fn ban_on(&self, conn: ConnId, key: &str, now: Instant) -> Option<String> {
        if self.rank(conn, key) >= OPERATOR {
            return None;
        }
        let c = self.sessions.get(conn)?;
        let room = self.rooms.get(key)?;
        if room.rules().modes().invite && !room.rules().invited(c.account(), c.addr()) {
            return Some(format!(
                "{} is invite-only: ask one of its moderators to /invite you",
                room.name()
            ));
        }
        let r = room
            .rules()
            .holds(false, c.account(), c.addr(), self.unix_ms(now))?;
        Some(format!(
            "you are banned from {}{}{}; you cannot join it",
            room.name(),
            until_text(r.until),
            reason_text(&r.reason)
        ))
    }

    /// True (and said, once per mute) if `conn` is muted in `key`: its lines
    /// there go nowhere.
    pub(in crate::core) fn muted(&mut self, conn: ConnId, key: &str, now: Instant) -> bool {
        if self.rank(conn, key) >= OPERATOR {
            return false;
        }
        let name = self.rooms.name_of(key).unwrap_or_default();
        // Banned while in the room (by another node, whose ban does not put
        // out members here): its lines go nowhere either.
        if let Some(text) = self.ban_on(conn, key, now) {
            self.error(conn, "banned", text);
            return true;
        }
        let modes = self
            .rooms
            .get(key)
            .map(|r| r.rules().modes())
            .unwrap_or_default();
        if modes.registered && self.account_of(conn).is_none() {
            let text =
                format!("only registered nicks may speak in {name}: /register, or /login, first");
            self.error(conn, "registered-only", text);
            return true;
        }
        let now_ms = self.unix_ms(now);
        if let Some(wait) = self
            .rooms
            .rules_mut(key)
            .and_then(|r| r.wait_to_speak(conn, now_ms))
        {
            let text = format!(
                "{name} is in slow mode: one line every {} seconds; wait {} more",
                modes.slow,
                wait.div_ceil(1000)
            );
            self.error(conn, "slow-mode", text);
            return true;
        }
        let Some((addr, account)) = self
            .sessions
            .get(conn)
            .map(|c| (c.addr(), c.account().map(str::to_string)))
        else {
            return false;
        };
        let now_ms = self.unix_ms(now);
        let Some(room) = self.rooms.rules_mut(key) else {
            return false;
        };
        let Some((r, first)) = room.tell_once(account.as_deref(), addr, now_ms) else {
            return false;
        };
        if first {
            let name = self.rooms.name_of(key).unwrap_or_default();
            let text = format!(
                "you are muted in {name}{}{}: your lines there go to nobody",
                until_text(r.until),
                reason_text(&r.reason)
            );
            self.error(conn, "muted", text);
        }
        true
    }

    /// `/op`, `/deop`, `/kick`, `/ban`, `/unban`, `/mute`, `/unmute` in the
    /// current room.
    pub(in crate::core) fn moderate(
        &mut self,
        conn: ConnId,
        action: ModAction,
        target: &str,
        rest: &str,
        now: Instant,
    ) {
        let Some(key) = self.current_room(conn, " to moderate") else {
            return;
        };
        let Some(name) = self.rooms.name_of(&key) else {
            return;
        };
        let me = self.rank(conn, &key);
        let needs = match action {
            ModAction::Op | ModAction::Deop => OWNER,
            _ => OPERATOR,
        };
        if me < needs {
            let who = if needs == OWNER {
                "its owner (or a server admin)"
            } else {
                "its owner and operators"
            };
            let text = format!("only {who} can {} in {name}", action.name());
            self.error(conn, "not-operator", text);
            return;
        }
        let resolved = match action {
            ModAction::Op | ModAction::Deop => self.operator_target(conn, target),
            ModAction::Kick => self.kick_target(conn, &key, target).map(|(_, t)| t),
            _ => self.restriction_target(conn, target),
        };
        let Some((target, their_rank, shown)) = resolved else {
            return;
        };
        let lifting = matches!(
            action,
            ModAction::Deop | ModAction::Unban | ModAction::Unmute
        );
        if their_rank >= me && !lifting {
            let text = format!(
                "{shown} is {} of {name}: you cannot {} them",
                rank_name(their_rank),
                action.name()
            );
            self.error(conn, "not-operator", text);
            return;
        }
        let (until, reason) = match action {
            ModAction::Ban | ModAction::Mute => {
                let (first, after) = rest.split_once(' ').unwrap_or((rest, ""));
                match parse_duration(first) {
                    Some(d) => (self.unix_ms(now).saturating_add(d), after.trim()),
                    None => (0, rest),
                }
            }
            _ => (0, rest),
        };
        let reason = super::super::truncate(reason, proto::REASON_MAX).to_string();
        let by = self.nick_of(conn);
        let whom = match (&target, action) {
            (_, ModAction::Kick) => shown.clone(),
            (Target::Account(a), ModAction::Op | ModAction::Deop) => a.clone(),
            (t, _) => t.encode(),
        };
        let act = Act {
            action: action.name(),
            by: &by,
            whom: &whom,
            until,
            reason: &reason,
            at: self.unix_ms(now),
            mode: 3,
        };
        if !self.apply_moderation(&key, &act) {
            let text = match action {
                ModAction::Op => format!("{shown} is an operator of {name} already"),
                ModAction::Deop => format!("{shown} is not an operator of {name}"),
                ModAction::Unban => format!("{shown} is not banned from {name}"),
                _ => format!("{shown} is not muted in {name}"),
            };
            self.error(conn, "no-change", text);
            return;
        }
        if self.rooms.get(&key).is_some_and(|r| !r.private()) {
            let rec = Record::Moderation {
                room: name.clone(),
                action: action.name().to_string(),
                by: by.clone(),
                whom,
                until,
                reason: reason.clone(),
                at: self.unix_ms(now),
                mode: 3,
            };
            // Shared with a cluster's other nodes (the bridge keeps the
            // last word on each ban, mute, operator; kicks stay here).
            self.persist_shared(rec);
        }
        let text = announcement(action, &by, &shown, &name, until, &reason);
        self.broadcast(&key, &ServerLine::info("moderation", text), None);
        match action {
            ModAction::Kick => {
                // Every session of the person that is in the room.
                let all = self.sessions.sessions_of(&fold(&shown));
                for c in all {
                    if self.sessions.get(c).is_some_and(|s| s.in_room(&key)) {
                        self.put_out(c, &key, &format!("kicked by {by}"), &reason);
                    }
                }
            }
            ModAction::Ban => self.put_out_banned(&key, &by, &reason, now),
            _ => {}
        }
    }

    /// `/mode`: show the room's modes, or change one (moderators).
    pub(in crate::core) fn mode(
        &mut self,
        conn: ConnId,
        change: Option<(bool, String, Option<u32>)>,
        now: Instant,
    ) {
        let Some(key) = self.current_room(conn, " to see its modes") else {
            return;
        };
        let name = self.rooms.name_of(&key).unwrap_or_default();
        let Some((on, what, secs)) = change else {
            let words = self
                .rooms
                .get(&key)
                .map(|r| r.rules().modes().words())
                .unwrap_or_default();
            let text = if words.is_empty() {
                format!("{name} has no modes: anyone may join and speak")
            } else {
                format!("modes of {name}: {}", words.join(" "))
            };
            self.reply(conn, &ServerLine::ok("mode", text));
            return;
        };
        if self.rank(conn, &key) < OPERATOR {
            let text = format!("only its owner and operators can change the modes of {name}");
            self.error(conn, "not-operator", text);
            return;
        }
        let word = match (on, secs) {
            (true, Some(s)) => format!("+{what}:{s}"),
            (true, None) => format!("+{what}"),
            (false, _) => format!("-{what}"),
        };
        self.record_action(conn, &key, "mode", &word, now);
        let said = match word.as_str() {
            "+invite" => "made it invite-only",
            "-invite" => "opened it to all",
            "+registered" => "let only registered nicks speak",
            "-registered" => "let everyone speak",
            "-slow" => "ended slow mode",
            _ => "",
        };
        let by = self.nick_of(conn);
        let text = if said.is_empty() {
            format!(
                "{by} set {name} to slow mode: one line every {} seconds",
                secs.unwrap_or(0)
            )
        } else {
            format!("{by} {said} in {name}")
        };
        self.broadcast(&key, &ServerLine::info("moderation", text), None);
    }

    /// `/invite nick`: into an invite-only room (moderators).
    pub(in crate::core) fn invite(&mut self, conn: ConnId, nick: &str, now: Instant) {
        let Some(key) = self.current_room(conn, " to invite someone to") else {
            return;
        };
        let name = self.rooms.name_of(&key).unwrap_or_default();
        if self.rank(conn, &key) < OPERATOR {
            let text = format!("only its owner and operators can invite to {name}");
            self.error(conn, "not-operator", text);
            return;
        }
        let Some((target, _, shown)) = self.restriction_target(conn, nick) else {
            return;
        };
        if !self.record_action(conn, &key, "invite", &target.encode(), now) {
            self.error(
                conn,
                "no-change",
                format!("{shown} is invited already (or {name} is not invite-only)"),
            );
            return;
        }
        let by = self.nick_of(conn);
        let text = format!("{by} invited {shown} to {name}");
        self.broadcast(&key, &ServerLine::info("moderation", text.clone()), None);
        if let Some(c) = self.sessions.by_nick(&fold(nick)) {
            let text = format!("{by} invites you to {name}: /join {name}");
            self.reply(c, &ServerLine::info("invite", text));
        }
    }

    /// Applies, logs and journals one action without a reason or duration;
    /// false if it changed nothing.
    fn record_action(
        &mut self,
        conn: ConnId,
        key: &str,
        action: &str,
        whom: &str,
        now: Instant,
    ) -> bool {
        if action == "invite"
            && !self
                .rooms
                .get(key)
                .is_some_and(|r| r.rules().modes().invite)
        {
            return false;
        }
        let by = self.nick_of(conn);
        let at = self.unix_ms(now);
        let act = Act {
            action,
            by: &by,
            whom,
            until: 0,
            reason: "",
            at,
            mode: 3,
        };
        if !self.apply_moderation(key, &act) {
            return false;
        }
        if let Some(room) = self.rooms.get(key).filter(|r| !r.private()) {
            let rec = Record::Moderation {
                room: room.name().to_string(),
                action: action.to_string(),
                by,
                whom: whom.to_string(),
                until: 0,
                reason: String::new(),
                at,
                mode: 3,
            };
            self.persist_shared(rec);
        }
        true
    }

    /// `/kill nick [reason]` (server admins): ends a connection here.
    pub(in crate::core) fn kill(&mut self, conn: ConnId, nick: &str, reason: &str) {
        if !self.is_admin(conn) {
            self.error(conn, "not-admin", "only a server admin can /kill");
            return;
        }
        let Some(c) = self.sessions.by_nick(&fold(nick)) else {
            self.error(conn, "no-such-user", format!("{nick} is not online here"));
            return;
        };
        if self.is_admin(c) {
            self.error(conn, "not-admin", format!("{nick} is a server admin too"));
            return;
        }
        let by = self.nick_of(conn);
        let reason = super::super::truncate(reason, proto::REASON_MAX);
        let why = if reason.is_empty() {
            format!("killed by {by}")
        } else {
            format!("killed by {by}: {reason}")
        };
        log::info!("{by} killed {nick} ({reason})");
        for s in self.sessions.sessions_of(&fold(nick)) {
            self.error(s, "killed", format!("{why}; disconnecting"));
            self.close(s, &why);
        }
        self.reply(
            conn,
            &ServerLine::ok("kill", format!("{nick} is disconnected")),
        );
    }

    /// `/announce text` (server admins): to every connection, once encoded
    /// per format.
    pub(in crate::core) fn announce_all(&mut self, conn: ConnId, text: &str) {
        if !self.is_admin(conn) {
            self.error(conn, "not-admin", "only a server admin can /announce");
            return;
        }
        let by = self.nick_of(conn);
        let line = ServerLine::info("announce", format!("announcement from {by}: {text}"));
        let mut shared = super::super::output::Shared::new(&line, self.out.clock());
        let all: Vec<(ConnId, proto::Format)> = self
            .sessions
            .iter()
            .filter(|(_, c)| c.nick().is_some())
            .map(|(k, c)| (k, c.format()))
            .collect();
        for (k, f) in all {
            self.out.send_bytes(k, shared.get(f));
        }
    }

    fn is_admin(&self, conn: ConnId) -> bool {
        self.account_of(conn)
            .is_some_and(|a| self.cfg.admins.contains(&a))
    }

    /// An operator must be a registered account.
    fn operator_target(&mut self, conn: ConnId, nick: &str) -> Option<(Target, u8, String)> {
        let key = fold(nick);
        let Some(a) = self.accounts.get(&key) else {
            let text = format!("{nick} is not a registered nick: only accounts can be operators");
            self.error(conn, "no-such-user", text);
            return None;
        };
        let shown = a.nick().to_string();
        Some((Target::Account(key), MEMBER, shown))
    }

    /// A member of the room by nick: its connection, and the usual triple.
    fn kick_target(
        &mut self,
        conn: ConnId,
        key: &str,
        nick: &str,
    ) -> Option<(ConnId, (Target, u8, String))> {
        let found = self
            .sessions
            .by_nick(&fold(nick))
            .filter(|&c| self.sessions.get(c).is_some_and(|s| s.in_room(key)));
        let Some(c) = found else {
            let name = self.rooms.name_of(key).unwrap_or_default();
            self.error(conn, "not-in-room", format!("{nick} is not in {name}"));
            return None;
        };
        let shown = self.nick_of(c);
        let rank = self.rank(c, key);
        let target = match self.account_of(c) {
            Some(a) => Target::Account(a),
            None => Target::Address(self.sessions.get(c).map(|s| s.addr())?),
        };
        Some((c, (target, rank, shown)))
    }

    /// What a ban or mute of `word` aims at: an address as given; a nick
    /// logged in, or registered and away, by its account; a guest online
    /// by its address (so a new nick does not shake it off).
    fn restriction_target(&mut self, conn: ConnId, word: &str) -> Option<(Target, u8, String)> {
        let key = self
            .sessions
            .get(conn)
            .and_then(|c| c.current().map(str::to_string))?;
        if let Ok(ip) = word.parse::<IpAddr>() {
            let t = Target::Address(addr_key(ip));
            let shown = t.show();
            return Some((t, MEMBER, shown));
        }
        if let Some(a) = word.strip_prefix("account:") {
            let a = fold(a);
            if proto::valid_nick(&a) {
                let rank = self.account_rank(Some(&a), &key);
                return Some((Target::Account(a.clone()), rank, format!("account {a}")));
            }
        }
        if !proto::valid_nick(word) {
            let text = format!("{word} is neither a nick nor an address");
            self.error(conn, "usage", text);
            return None;
        }
        let folded = fold(word);
        if let Some(c) = self.sessions.by_nick(&folded) {
            let shown = self.nick_of(c);
            let rank = self.rank(c, &key);
            return match self.account_of(c) {
                Some(a) => Some((Target::Account(a), rank, shown)),
                None => {
                    let addr = self.sessions.get(c).map(|s| s.addr())?;
                    Some((Target::Address(addr), rank, format!("{shown} ({addr})")))
                }
            };
        }
        if let Some(a) = self.accounts.get(&folded) {
            let shown = a.nick().to_string();
            let rank = self.account_rank(Some(&folded), &key);
            return Some((Target::Account(folded), rank, shown));
        }
        let text = format!("nobody is called {word}; a guest who left can be banned by address");
        self.error(conn, "no-such-user", text);
        None
    }

    /// Takes a member out of a room as a moderator's doing.
    fn put_out(&mut self, c: ConnId, key: &str, why: &str, reason: &str) {
        let Some(name) = self.rooms.name_of(key) else {
            return;
        };
        let reason = if reason.is_empty() {
            why.to_string()
        } else {
            format!("{why}: {reason}")
        };
        let line = ServerLine::Part {
            room: name,
            nick: self.nick_of(c),
            reason,
        };
        let quiet = self
            .rooms
            .get(key)
            .is_some_and(|r| r.members().len() > self.cfg.quiet_room);
        self.leave_room(c, key, &line);
        if quiet {
            self.reply(c, &line);
        }
        self.tell_current(c);
    }

    /// After a ban, every member it now holds is put out.
    fn put_out_banned(&mut self, key: &str, by: &str, reason: &str, now: Instant) {
        let members: Vec<ConnId> = self
            .rooms
            .get(key)
            .map(|r| r.members().conns().collect())
            .unwrap_or_default();
        for m in members {
            if self.ban_on(m, key, now).is_some() {
                self.put_out(m, key, &format!("banned by {by}"), reason);
            }
        }
    }

    /// Applies one moderation change to the room `key` (live, or replayed);
    /// false if it changed nothing (or makes no sense).
    pub(in crate::core) fn apply_moderation(&mut self, key: &str, a: &Act<'_>) -> bool {
        let Some(rules) = self.rooms.rules_mut(key) else {
            return false;
        };
        if a.mode & 1 != 0 {
            let changed = match a.action {
                "op" | "deop" => {
                    if !proto::valid_nick(a.whom) {
                        return false;
                    }
                    rules.set_op(&fold(a.whom), a.action == "op")
                }
                "ban" | "mute" | "unban" | "unmute" => {
                    let Some(target) = Target::decode(a.whom) else {
                        return false;
                    };
                    let mute = a.action.ends_with("mute");
                    if a.action.starts_with("un") {
                        rules.lift(mute, &target)
                    } else {
                        rules.restrict(
                            mute,
                            Restriction {
                                target,
                                until: a.until,
                                by: a.by.to_string(),
                                reason: a.reason.to_string(),
                                told: false,
                            },
                        );
                        true
                    }
                }
                "kick" => true,
                "mode" => rules.set_mode(a.whom),
                "invite" => match Target::decode(a.whom) {
                    Some(t) => rules.invite(t),
                    None => return false,
                },
                _ => return false,
            };
            if !changed {
                return false;
            }
        }
        if a.mode & 2 != 0 {
            rules.log(Entry {
                at: a.at,
                by: a.by.to_string(),
                action: a.action.to_string(),
                whom: a.whom.to_string(),
                until: a.until,
                reason: a.reason.to_string(),
            });
        }
        true
    }

    /// `/bans [#room]`: live bans and mutes.
    pub(in crate::core) fn bans(&mut self, conn: ConnId, r: Option<&RoomRef>, now: Instant) {
        let Some(key) = self.readable_room(conn, r, "see its bans") else {
            return;
        };
        let name = self.rooms.name_of(&key).unwrap_or_default();
        let now_ms = self.unix_ms(now);
        let Some(rules) = self.rooms.rules_mut(&key) else {
            return;
        };
        let (bans, mutes) = (rules.live(false, now_ms), rules.live(true, now_ms));
        for (what, list) in [("banned", &bans), ("muted", &mutes)] {
            for b in list.iter() {
                let text = format!(
                    "{name}: {} {what} by {}{}{}",
                    b.target.show(),
                    b.by,
                    until_text(b.until),
                    reason_text(&b.reason)
                );
                self.reply(conn, &ServerLine::info("ban", text));
            }
        }
        let text = format!(
            "{} {} and {} {} in {name}",
            bans.len(),
            plural(bans.len(), "ban", "bans"),
            mutes.len(),
            plural(mutes.len(), "mute", "mutes")
        );
        self.reply(conn, &ServerLine::ok("bans", text));
    }

    /// `/modlog [#room]`: the last moderation actions, for the room's
    /// moderators.
    pub(in crate::core) fn modlog(&mut self, conn: ConnId, r: Option<&RoomRef>) {
        let Some(key) = self.readable_room(conn, r, "see its moderation log") else {
            return;
        };
        let name = self.rooms.name_of(&key).unwrap_or_default();
        if self.rank(conn, &key) < OPERATOR {
            let text =
                format!("only the owner and operators of {name} can read its moderation log");
            self.error(conn, "not-operator", text);
            return;
        }
        let entries = self
            .rooms
            .get(&key)
            .map(|r| r.rules().entries())
            .unwrap_or_default();
        for e in &entries {
            let whom = Target::decode(&e.whom).map_or_else(|| e.whom.clone(), |t| t.show());
            let text = format!(
                "{} {} {} {whom}{}{}",
                proto::line::stamp(e.at, 0),
                e.by,
                e.action,
                until_text(e.until),
                reason_text(&e.reason)
            );
            self.reply(conn, &ServerLine::info("modlog", text));
        }
        let n = entries.len();
        let text = format!(
            "{n} moderation {} in {name}",
            plural(n, "action", "actions")
        );
        self.reply(conn, &ServerLine::ok("modlog", text));
    }

    /// `moderators of #club: olga (owner), bob (operator)`, for `/who`.
    pub(in crate::core) fn moderators_of(&self, key: &str) -> Option<String> {
        let room = self.rooms.get(key)?;
        let mut who: Vec<String> = Vec::new();
        if let Some(o) = room.owner() {
            who.push(format!("{o} (owner)"));
        }
        for op in room.rules().ops() {
            let shown = self.accounts.get(op).map_or(op.as_str(), |a| a.nick());
            who.push(format!("{shown} (operator)"));
        }
        (!who.is_empty()).then(|| format!("moderators of {}: {}", room.name(), who.join(", ")))
    }

    /// Roles of an account, for `/whois`: admin, rooms owned and operated.
    pub(in crate::core) fn roles_of(&self, account: &str) -> Vec<String> {
        let mut roles = Vec::new();
        if self.cfg.admins.iter().any(|a| a == account) {
            roles.push("server admin".to_string());
        }
        let mut owned = Vec::new();
        let mut operated = Vec::new();
        for (_, r) in self.rooms.iter() {
            if r.owner().map(fold).as_deref() == Some(account) {
                owned.push(r.name().to_string());
            }
            if r.rules().is_op(account) {
                operated.push(r.name().to_string());
            }
        }
        owned.sort();
        operated.sort();
        if !owned.is_empty() {
            roles.push(format!("owner of {}", owned.join(", ")));
        }
        if !operated.is_empty() {
            roles.push(format!("operator of {}", operated.join(", ")));
        }
        roles
    }

    /// Moderation state as records, for a snapshot: first the state (mode
    /// 1), then the log (mode 2).
    pub(in crate::core) fn moderation_snapshot(&self, out: &mut Vec<Record>) {
        let mut rooms: Vec<_> = self.rooms.iter().filter(|(_, r)| !r.private()).collect();
        rooms.sort_by(|a, b| a.0.cmp(b.0));
        for (_, r) in rooms {
            let rules = r.rules();
            let rec = |action: &str,
                       by: &str,
                       whom: String,
                       until: u64,
                       reason: &str,
                       at: u64,
                       mode: u8| {
                Record::Moderation {
                    room: r.name().to_string(),
                    action: action.to_string(),
                    by: by.to_string(),
                    whom,
                    until,
                    reason: reason.to_string(),
                    at,
                    mode,
                }
            };
            for op in rules.ops() {
                out.push(rec("op", "", op.clone(), 0, "", 0, 1));
            }
            for (mute, action) in [(false, "ban"), (true, "mute")] {
                for b in rules.all(mute) {
                    out.push(rec(
                        action,
                        &b.by,
                        b.target.encode(),
                        b.until,
                        &b.reason,
                        0,
                        1,
                    ));
                }
            }
            for w in rules.modes().words() {
                out.push(rec("mode", "", w, 0, "", 0, 1));
            }
            for t in rules.invitations() {
                out.push(rec("invite", "", t.encode(), 0, "", 0, 1));
            }
            for e in rules.entries() {
                out.push(rec(&e.action, &e.by, e.whom, e.until, &e.reason, e.at, 2));
            }
        }
    }
}

fn until_text(until: u64) -> String {
    if until == 0 {
        String::new()
    } else {
        format!(" until {} UTC", proto::line::stamp(until, 0))
    }
}

fn reason_text(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    }
}

/// What the room is told.
fn announcement(
    a: ModAction,
    by: &str,
    whom: &str,
    room: &str,
    until: u64,
    reason: &str,
) -> String {
    let (u, r) = (until_text(until), reason_text(reason));
    match a {
        ModAction::Op => format!("{by} made {whom} an operator of {room}"),
        ModAction::Deop => format!("{by} removed {whom} as an operator of {room}"),
        ModAction::Kick => format!("{by} kicked {whom} out of {room}{r}"),
        ModAction::Ban => format!("{by} banned {whom} from {room}{u}{r}"),
        ModAction::Unban => format!("{by} lifted the ban on {whom} in {room}"),
        ModAction::Mute => format!("{by} muted {whom} in {room}{u}{r}"),
        ModAction::Unmute => format!("{by} unmuted {whom} in {room}"),
    }
}

impl Core {
    /// `/takeover #room` (server admins): an owned room whose owner is gone
    /// (or misbehaves) gets the admin as its owner.
    pub(in crate::core) fn takeover(&mut self, conn: ConnId, r: &RoomRef, now: Instant) {
        if !self.is_admin(conn) {
            self.error(
                conn,
                "not-admin",
                "only a server admin can /takeover a room",
            );
            return;
        }
        let key = r.key();
        let Some(room) = self.rooms.get(&key) else {
            self.error(conn, "no-such-room", format!("no room {}", r.display()));
            return;
        };
        if room.permanent() {
            let text = format!("{} is a default room and has no owner", room.name());
            self.error(conn, "not-owner", text);
            return;
        }
        let name = room.name().to_string();
        let before = room.owner().map(str::to_string);
        let me = self.nick_of(conn);
        self.rooms.set_owner(&key, me.clone());
        let ts = self.unix_ms(now);
        self.persist_shared(Record::RoomOwned {
            room: name.clone(),
            owner: me.clone(),
            ts,
        });
        let act = Act {
            action: "takeover",
            by: &me,
            whom: before.as_deref().unwrap_or("-"),
            until: 0,
            reason: "",
            at: ts,
            mode: 2,
        };
        self.apply_moderation(&key, &act);
        self.persist(Record::Moderation {
            room: name.clone(),
            action: "takeover".to_string(),
            by: me.clone(),
            whom: before.clone().unwrap_or_else(|| "-".to_string()),
            until: 0,
            reason: String::new(),
            at: ts,
            mode: 2,
        });
        let text = match before {
            Some(b) => format!("{me} took over {name} from {b}: {me} owns it now"),
            None => format!("{me} owns {name} now"),
        };
        self.broadcast(&key, &ServerLine::info("moderation", text.clone()), None);
        self.reply(conn, &ServerLine::ok("takeover", text));
    }
}

/// The `room` of a server-wide ban's record: not a room name anyone can
/// have.
pub(in crate::core) const SERVER_WIDE: &str = "*";

impl Core {
    /// `/gban` and `/ungban` (server admins): a ban from the whole server,
    /// by account or address, for a while or for good.
    pub(in crate::core) fn server_ban(
        &mut self,
        conn: ConnId,
        lift: bool,
        target: &str,
        rest: &str,
        now: Instant,
    ) {
        if !self.is_admin(conn) {
            self.error(
                conn,
                "not-admin",
                "only a server admin can ban from the server",
            );
            return;
        }
        let resolved = self.global_target(conn, target);
        let Some((target, shown, admin)) = resolved else {
            return;
        };
        if admin && !lift {
            self.error(conn, "not-admin", format!("{shown} is a server admin"));
            return;
        }
        let (first, after) = rest.split_once(' ').unwrap_or((rest, ""));
        let (until, reason) = match parse_duration(first) {
            Some(d) => (self.unix_ms(now).saturating_add(d), after.trim()),
            None => (0, rest),
        };
        let reason = super::super::truncate(reason, proto::REASON_MAX).to_string();
        let by = self.nick_of(conn);
        let action = if lift { "unban" } else { "ban" };
        if !self.apply_server_ban(action, &target.encode(), until, &by, &reason) {
            self.error(
                conn,
                "no-change",
                format!("{shown} is not banned from the server"),
            );
            return;
        }
        self.persist_shared(Record::Moderation {
            room: SERVER_WIDE.to_string(),
            action: action.to_string(),
            by: by.clone(),
            whom: target.encode(),
            until,
            reason: reason.clone(),
            at: self.unix_ms(now),
            mode: 3,
        });
        log::info!("{by} {action}s {} from the server", target.encode());
        let text = if lift {
            format!("{shown} may use this server again")
        } else {
            format!(
                "{shown} is banned from this server{}{}",
                until_text(until),
                reason_text(&reason)
            )
        };
        self.reply(conn, &ServerLine::ok("gban", text));
        if !lift {
            let held: Vec<ConnId> = self
                .sessions
                .iter()
                .filter(|&(c, _)| self.server_ban_on(c, now).is_some())
                .map(|(c, _)| c)
                .collect();
            for c in held {
                self.shut_out(c, now);
            }
        }
    }

    /// A nick (its account, or a guest's address), `account:NAME` or an
    /// address; and whether it is an admin.
    fn global_target(&mut self, conn: ConnId, word: &str) -> Option<(Target, String, bool)> {
        if let Ok(ip) = word.parse::<IpAddr>() {
            let t = Target::Address(addr_key(ip));
            let shown = t.show();
            return Some((t, shown, false));
        }
        let name = word.strip_prefix("account:").unwrap_or(word);
        if !proto::valid_nick(name) {
            self.error(
                conn,
                "usage",
                format!("{word} is neither a nick nor an address"),
            );
            return None;
        }
        let key = fold(name);
        let admin = self.cfg.admins.contains(&key);
        if !word.starts_with("account:")
            && let Some(c) = self.sessions.by_nick(&key)
            && self.account_of(c).is_none()
        {
            let addr = self.sessions.get(c).map(|s| s.addr())?;
            let t = Target::Address(addr);
            return Some((t, format!("{name} ({addr})"), false));
        }
        if self.accounts.contains(&key) {
            return Some((Target::Account(key), name.to_string(), admin));
        }
        self.error(conn, "no-such-user", format!("nobody is called {name}"));
        None
    }

    /// Applies a server-wide ban or its lifting; false if nothing changed.
    pub(in crate::core) fn apply_server_ban(
        &mut self,
        action: &str,
        whom: &str,
        until: u64,
        by: &str,
        reason: &str,
    ) -> bool {
        let Some(target) = Target::decode(whom) else {
            return false;
        };
        match action {
            "ban" => {
                self.server_rules.restrict(
                    false,
                    Restriction {
                        target,
                        until,
                        by: by.to_string(),
                        reason: reason.to_string(),
                        told: false,
                    },
                );
                true
            }
            "unban" => self.server_rules.lift(false, &target),
            _ => false,
        }
    }

    /// The line a connection held by a server-wide ban is told, if one holds
    /// (admins are never held).
    pub(in crate::core) fn server_ban_on(&self, conn: ConnId, now: Instant) -> Option<String> {
        if self.is_admin(conn) {
            return None;
        }
        let c = self.sessions.get(conn)?;
        let r = self
            .server_rules
            .holds(false, c.account(), c.addr(), self.unix_ms(now))?;
        Some(format!(
            "you are banned from this server{}{}",
            until_text(r.until),
            reason_text(&r.reason)
        ))
    }

    /// Tells a connection held by a server-wide ban, and closes it; true if
    /// it was held.
    pub(in crate::core) fn shut_out(&mut self, conn: ConnId, now: Instant) -> bool {
        let Some(text) = self.server_ban_on(conn, now) else {
            return false;
        };
        self.error(conn, "banned", text);
        self.close(conn, "banned from the server");
        true
    }

    /// `/gbans` (server admins).
    pub(in crate::core) fn server_bans(&mut self, conn: ConnId, now: Instant) {
        if !self.is_admin(conn) {
            self.error(
                conn,
                "not-admin",
                "only a server admin can list server bans",
            );
            return;
        }
        let live = self.server_rules.live(false, self.unix_ms(now));
        for b in &live {
            let text = format!(
                "{} banned from the server by {}{}{}",
                b.target.show(),
                b.by,
                until_text(b.until),
                reason_text(&b.reason)
            );
            self.reply(conn, &ServerLine::info("ban", text));
        }
        let n = live.len();
        let text = format!("{n} server {}", plural(n, "ban", "bans"));
        self.reply(conn, &ServerLine::ok("gbans", text));
    }

    pub(in crate::core) fn server_ban_snapshot(&self, out: &mut Vec<Record>) {
        for b in self.server_rules.all(false) {
            out.push(Record::Moderation {
                room: SERVER_WIDE.to_string(),
                action: "ban".to_string(),
                by: b.by.clone(),
                whom: b.target.encode(),
                until: b.until,
                reason: b.reason.clone(),
                at: 0,
                mode: 1,
            });
        }
    }
}

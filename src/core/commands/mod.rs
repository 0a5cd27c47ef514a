//! The commands, parsed by [`crate::proto::Command`] and carried out here:
//! each one reads the parts of the core it needs and asks the part that owns
//! the data to change it (see the core's module docs). One file per kind:
//!
//! * `session.rs` — naming, formats, help, leaving;
//! * `room.rs` — joining, talking, topics, uploads, history, owned rooms;
//! * `account.rs` — registering, logging in, profiles, published keys;
//! * `dm.rs` — direct messages, kept and waiting;
//! * `everyday.rs` — settings, where one is, the date, search;
//! * `moderation.rs` — operators, kicks, bans, mutes, the moderation log.

mod account;
mod dm;
mod everyday;
mod moderation;
mod multi;
pub(super) use moderation::{Act, SERVER_WIDE};
mod room;
mod session;

use std::time::Instant;

/// Characters of a bio.
pub(super) const BIO_MAX: usize = 300;

use super::{ConnId, Core};
use crate::proto::{Command, JoinTarget, ServerLine};

impl Core {
    /// Runs one parsed command. Before a connection has a nick only the
    /// commands that give it one (or leave, or explain) are allowed.
    pub(super) fn command(&mut self, conn: ConnId, cmd: Command, now: Instant) {
        let named = self.sessions.get(conn).is_some_and(|c| c.nick().is_some());
        if !named
            && !matches!(
                cmd,
                Command::Nick(_)
                    | Command::Help(_)
                    | Command::Quit(_)
                    | Command::Format(_)
                    | Command::Ping(_)
                    | Command::Login { .. }
            )
        {
            self.error(
                conn,
                "no-nick",
                "choose a nick first: type it, or /nick <name>",
            );
            return;
        }
        match cmd {
            Command::Say(text) => self.say(conn, text, false, now),
            Command::Me(text) => self.say(conn, text, true, now),
            Command::Help(topic) => self.help(conn, topic.as_deref()),
            Command::Nick(n) => self.set_nick(conn, &n, false, now),
            Command::Join(JoinTarget::New) => self.join_new(conn, now),
            Command::Join(JoinTarget::Room(r)) => self.join(conn, &r, now),
            Command::Part(r) => self.part(conn, r.as_ref()),
            Command::Rooms => self.list_rooms(conn),
            Command::Who(r) => self.who(conn, r.as_ref()),
            Command::Online => self.online(conn),
            Command::Dm { to, text } => self.dm(conn, &to, text, now),
            Command::Topic(t) => self.topic(conn, t),
            Command::Upload { kind, name, data } => self.upload(conn, kind, name, data, now),
            Command::History {
                room,
                count,
                before,
            } => self.history(conn, room.as_ref(), count, before),
            Command::Quit(reason) => self.quit(conn, reason),
            Command::Format(f) => self.set_format(conn, f),
            Command::Ping(arg) => {
                let line = ServerLine::ok("pong", arg.unwrap_or_default());
                self.reply(conn, &line)
            }
            Command::Register(pw) => self.register(conn, pw, now),
            Command::Login { nick, password } => self.login(conn, &nick, password, now),
            Command::Whois(nick) => self.whois(conn, &nick),
            Command::Bio(text) => self.set_bio(conn, text),
            Command::Dms(nick) => self.show_dms(conn, &nick),
            Command::Create { room, topic } => self.create_room(conn, &room, topic, now),
            Command::Delete(room) => self.delete_room(conn, &room),
            Command::Encrypted(env) => self.say_encrypted(conn, env, now),
            Command::Key(k) => self.key(conn, k),
            Command::Set(change) => self.set(conn, change),
            Command::Where => self.where_am_i(conn),
            Command::Moderate {
                action,
                target,
                rest,
            } => self.moderate(conn, action, &target, &rest, now),
            Command::Bans(r) => self.bans(conn, r.as_ref(), now),
            Command::Kill { nick, reason } => self.kill(conn, &nick, &reason),
            Command::Passwd => self.passwd(conn),
            Command::Unregister => self.unregister(conn),
            Command::Sessions => self.list_sessions(conn),
            Command::Logout(which) => self.logout(conn, which.as_deref()),
            Command::Away(msg) => self.away(conn, msg),
            Command::Ignore { nick, on } => self.ignore(conn, nick.as_deref(), on),
            Command::ServerBan { lift, target, rest } => {
                self.server_ban(conn, lift, &target, &rest, now)
            }
            Command::ServerBans => self.server_bans(conn, now),
            Command::Takeover(r) => self.takeover(conn, &r, now),
            Command::Announce(text) => self.announce_all(conn, &text),
            Command::Mode(change) => self.mode(conn, change, now),
            Command::Invite(nick) => self.invite(conn, &nick, now),
            Command::Modlog(r) => self.modlog(conn, r.as_ref()),
            Command::Search { text, room, count } => self.search(conn, &text, room.as_ref(), count),
        }
    }
}

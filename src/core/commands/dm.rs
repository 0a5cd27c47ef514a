//! Direct messages: `/dm`, `/dms`, and handing over what waited for someone
//! who was away. History is kept for conversations between registered users
//! only: an unregistered nick may belong to someone else tomorrow.

use std::rc::Rc;
use std::time::Instant;

use super::super::{ConnId, Core, ToCluster};
use crate::proto::{ServerLine, fold};
use crate::record::Record;

/// Where a direct message goes.
enum Route {
    Here(ConnId),
    /// Online on another node.
    Node(String),
    /// Registered and offline everywhere.
    Offline,
}

impl Core {
    pub(in crate::core) fn dm(&mut self, conn: ConnId, to: &str, text: String, now: Instant) {
        let from = self.nick_of(conn);
        let ts = self.unix_ms(now);
        let to_key = fold(to);
        let registered = self.accounts.contains(&to_key);
        let (route, to_display) = if let Some(t) = self.sessions.by_nick(&to_key) {
            (Route::Here(t), self.nick_of(t))
        } else if let Some(r) = self.remote(&to_key) {
            (Route::Node(r.node().to_string()), r.nick().to_string())
        } else if let Some(a) = self.accounts.get(&to_key) {
            (Route::Offline, a.nick().to_string())
        } else {
            let text = format!("{to} is not online and not registered; /online lists who is");
            self.error(conn, "no-such-user", text);
            return;
        };
        let line = ServerLine::Dm {
            from: from.clone(),
            to: to_display.clone(),
            ts,
            text: text.clone(),
        };
        if self.logged_in(conn) && registered {
            self.persist(Record::Dm {
                from: from.clone(),
                to: to_display.clone(),
                ts,
                text: text.clone(),
                pending: false,
            });
            self.dms.keep(&from, &to_display, Rc::new(line.clone()));
        }
        match route {
            Route::Here(t) => {
                // Someone who ignores the sender is not shown it (and the
                // sender is not told: ignoring is private).
                let ignored = self
                    .sessions
                    .get(t)
                    .is_some_and(|c| c.ignores().iter().any(|k| *k == fold(&from)));
                if !ignored {
                    // Every session of the person gets it.
                    for s in self.sessions.sessions_of(&to_key) {
                        self.reply(s, &line);
                    }
                }
                // And the sender (every session of it) sees what it sent.
                let theirs = self.sessions.sessions_of(&to_key);
                let mut mine = self.other_sessions(conn);
                mine.push(conn);
                for s in mine {
                    if !theirs.contains(&s) {
                        self.reply(s, &line);
                    }
                }
                if !theirs.contains(&conn)
                    && let Some(msg) = self.sessions.get(t).and_then(|c| c.away())
                {
                    let text = format!("{to_display} is away: {msg}");
                    self.reply(conn, &ServerLine::info("away", text));
                }
            }
            Route::Node(node) => {
                self.ask_cluster(ToCluster::Dm {
                    node,
                    to: to_display,
                    line: line.encode_machine(),
                    store: registered,
                });
                self.reply(conn, &line);
            }
            Route::Offline => {
                if self.cluster.is_some() {
                    // It waits in the cluster's inbox, so whichever server
                    // they log in to hands it over.
                    self.ask_cluster(ToCluster::Store {
                        to: to_display.clone(),
                        line: line.encode_machine(),
                    });
                } else {
                    self.persist(Record::Dm {
                        from,
                        to: to_display.clone(),
                        ts,
                        text,
                        pending: true,
                    });
                    self.dms.hold(&to_display, line.clone());
                }
                self.reply(conn, &line);
                let note =
                    format!("{to_display} is offline and will get this when they next log in");
                self.reply(conn, &ServerLine::info("offline", note));
            }
        }
    }

    pub(in crate::core) fn show_dms(&mut self, conn: ConnId, other: &str) {
        if !self.require_login(conn, "direct-message history") {
            return;
        }
        let me = self.nick_of(conn);
        let lines = self.dms.conversation(&me, other);
        if lines.is_empty() {
            self.reply(
                conn,
                &ServerLine::info("dms", format!("no direct messages with {other} kept")),
            );
            return;
        }
        self.reply(
            conn,
            &ServerLine::History {
                room: format!("@{other}"),
                count: lines.len(),
            },
        );
        for l in &lines {
            self.reply_dated(conn, l);
        }
    }

    /// Hands over direct messages that arrived while the user was away.
    pub(in crate::core) fn deliver_pending(&mut self, conn: ConnId, key: &str) {
        let lines = self.dms.take_pending(key);
        self.deliver_waiting(conn, lines);
    }

    /// Shows direct messages that waited, and records that they were.
    pub(in crate::core) fn deliver_waiting(&mut self, conn: ConnId, mut lines: Vec<ServerLine>) {
        let ignores = self
            .sessions
            .get(conn)
            .map(|c| c.ignores().to_vec())
            .unwrap_or_default();
        lines
            .retain(|l| !matches!(l, ServerLine::Dm { from, .. } if ignores.contains(&fold(from))));
        if lines.is_empty() {
            return;
        }
        let n = lines.len();
        self.reply(
            conn,
            &ServerLine::History {
                room: format!("@{}", self.nick_of(conn)),
                count: n,
            },
        );
        for l in &lines {
            self.reply_dated(conn, l);
        }
        let text = format!(
            "{n} direct {} arrived while you were away",
            if n == 1 { "message" } else { "messages" }
        );
        self.reply(conn, &ServerLine::info("offline", text));
        self.persist(Record::DmDelivered {
            to: self.nick_of(conn),
        });
    }

    /// Keeps a DM that came from another node in this node's conversation
    /// history, if both are registered.
    pub(in crate::core) fn keep_dm(&mut self, from: &str, to: &str, line: &ServerLine) {
        if !(self.accounts.contains(&fold(from)) && self.accounts.contains(&fold(to))) {
            return;
        }
        if let ServerLine::Dm { ts, text, .. } = line {
            self.persist(Record::Dm {
                from: from.to_string(),
                to: to.to_string(),
                ts: *ts,
                text: text.clone(),
                pending: false,
            });
        }
        self.dms.keep(from, to, Rc::new(line.clone()));
    }
}

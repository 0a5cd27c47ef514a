//! A room's moderation state: its operators (accounts an owner named), its
//! bans and mutes (by account or by address, until a time or for good), and
//! the log of what its moderators did. A room without any of these costs a
//! null pointer. This file owns that data; `commands/moderation.rs` decides
//! who may change it, and `Record::Moderation` keeps it in the journal.
//!
//! Roles and restrictions name accounts, never nicks: a guest who takes a
//! nick gains nothing from it, and a banned account stays banned under any
//! nick. A guest is restricted by its address instead (an IPv4 address, or
//! an IPv6 /64, as the per-address limits count it). Expiry needs no timer:
//! a restriction past its time is ignored when consulted and pruned when
//! listed or snapshotted.

use std::collections::VecDeque;
use std::net::IpAddr;

/// Moderation log entries kept per room.
pub(super) const LOG_KEPT: usize = 100;

/// Who a ban or mute is aimed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// A folded account name.
    Account(String),
    Address(IpAddr),
}

impl Target {
    /// The journal form: `account:alice` or `address:192.0.2.7`.
    pub(super) fn encode(&self) -> String {
        match self {
            Target::Account(a) => format!("account:{a}"),
            Target::Address(ip) => format!("address:{ip}"),
        }
    }

    pub(super) fn decode(s: &str) -> Option<Target> {
        if let Some(a) = s.strip_prefix("account:") {
            return crate::proto::valid_nick(a).then(|| Target::Account(crate::proto::fold(a)));
        }
        s.strip_prefix("address:")?
            .parse()
            .ok()
            .map(Target::Address)
    }

    /// How people read it.
    pub(super) fn show(&self) -> String {
        match self {
            Target::Account(a) => format!("account {a}"),
            Target::Address(ip) => format!("address {ip}"),
        }
    }

    fn hits(&self, account: Option<&str>, addr: IpAddr) -> bool {
        match self {
            Target::Account(a) => account == Some(a.as_str()),
            Target::Address(ip) => *ip == addr,
        }
    }
}

/// A ban or a mute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Restriction {
    pub(super) target: Target,
    /// Unix ms it ends at; 0: never.
    pub(super) until: u64,
    pub(super) by: String,
    pub(super) reason: String,
    /// The person it holds was told (a mute is said once, not per line).
    pub(super) told: bool,
}

impl Restriction {
    fn live(&self, now: u64) -> bool {
        self.until == 0 || self.until > now
    }
}

/// One line of `/modlog`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) at: u64,
    pub(super) by: String,
    pub(super) action: String,
    pub(super) whom: String,
    pub(super) until: u64,
    pub(super) reason: String,
}

#[derive(Debug, Default)]
struct Inner {
    ops: Vec<String>,
    bans: Vec<Restriction>,
    mutes: Vec<Restriction>,
    log: VecDeque<Entry>,
    modes: Modes,
    /// Who may join while the room is invite-only.
    invited: Vec<Target>,
    /// Slow mode: when each member last spoke (Unix ms), by connection.
    spoke: std::collections::HashMap<usize, u64>,
}

/// A room's modes (`/mode`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Modes {
    /// Only moderators and those invited may join.
    pub(super) invite: bool,
    /// Only logged-in accounts (and moderators) may speak.
    pub(super) registered: bool,
    /// One line per this many seconds per member; 0: off.
    pub(super) slow: u32,
}

impl Modes {
    /// `+invite +slow:30`, for the journal and for people.
    pub(super) fn words(self) -> Vec<String> {
        let mut w = Vec::new();
        if self.invite {
            w.push("+invite".to_string());
        }
        if self.registered {
            w.push("+registered".to_string());
        }
        if self.slow > 0 {
            w.push(format!("+slow:{}", self.slow));
        }
        w
    }
}

/// A room's moderation state (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Rules {
    inner: Option<Box<Inner>>,
}

impl Rules {
    fn get(&mut self) -> &mut Inner {
        self.inner.get_or_insert_with(Box::default)
    }

    pub(super) fn is_op(&self, account: &str) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|i| i.ops.iter().any(|o| o == account))
    }

    /// Names or unnames an operator; false if that changed nothing.
    pub(super) fn set_op(&mut self, account: &str, op: bool) -> bool {
        if !op && self.inner.is_none() {
            return false;
        }
        let i = self.get();
        let had = i.ops.iter().any(|o| o == account);
        match (had, op) {
            (false, true) => i.ops.push(account.to_string()),
            (true, false) => i.ops.retain(|o| o != account),
            _ => return false,
        }
        true
    }

    pub(super) fn ops(&self) -> &[String] {
        self.inner.as_ref().map_or(&[], |i| &i.ops)
    }

    /// Adds (or replaces, for the same target) a ban or a mute.
    pub(super) fn restrict(&mut self, mute: bool, r: Restriction) {
        let i = self.get();
        let list = if mute { &mut i.mutes } else { &mut i.bans };
        list.retain(|x| x.target != r.target);
        list.push(r);
    }

    /// Lifts a ban or mute; false if there was none.
    pub(super) fn lift(&mut self, mute: bool, target: &Target) -> bool {
        let i = self.get();
        let list = if mute { &mut i.mutes } else { &mut i.bans };
        let before = list.len();
        list.retain(|x| x.target != *target);
        list.len() != before
    }

    /// The live ban or mute that holds for someone, if any.
    pub(super) fn holds(
        &self,
        mute: bool,
        account: Option<&str>,
        addr: IpAddr,
        now: u64,
    ) -> Option<&Restriction> {
        let i = self.inner.as_ref()?;
        let list = if mute { &i.mutes } else { &i.bans };
        list.iter()
            .find(|r| r.live(now) && r.target.hits(account, addr))
    }

    /// The live mute that holds for someone, and whether this is the
    /// first time it was asked about (so they are told once).
    pub(super) fn tell_once(
        &mut self,
        account: Option<&str>,
        addr: IpAddr,
        now: u64,
    ) -> Option<(Restriction, bool)> {
        let i = self.inner.as_mut()?;
        let r = i
            .mutes
            .iter_mut()
            .find(|r| r.live(now) && r.target.hits(account, addr))?;
        let first = !r.told;
        r.told = true;
        Some((r.clone(), first))
    }

    /// Every ban or mute, expired or not (a snapshot keeps what the
    /// journal said; expired ones are ignored when read).
    pub(super) fn all(&self, mute: bool) -> &[Restriction] {
        match &self.inner {
            Some(i) if mute => &i.mutes,
            Some(i) => &i.bans,
            None => &[],
        }
    }

    /// The live bans or mutes, dropping expired ones.
    pub(super) fn live(&mut self, mute: bool, now: u64) -> Vec<Restriction> {
        let Some(i) = self.inner.as_mut() else {
            return Vec::new();
        };
        let list = if mute { &mut i.mutes } else { &mut i.bans };
        list.retain(|r| r.live(now));
        list.clone()
    }

    pub(super) fn modes(&self) -> Modes {
        self.inner.as_ref().map(|i| i.modes).unwrap_or_default()
    }

    /// Applies `+invite`, `-registered`, `+slow:30`, `-slow`; false if it
    /// is not one or changes nothing.
    pub(super) fn set_mode(&mut self, word: &str) -> bool {
        let before = self.modes();
        let mut m = before;
        match word {
            "+invite" => m.invite = true,
            "-invite" => m.invite = false,
            "+registered" => m.registered = true,
            "-registered" => m.registered = false,
            "-slow" => m.slow = 0,
            w => match w.strip_prefix("+slow:").and_then(|n| n.parse::<u32>().ok()) {
                Some(n) if (1..=3600).contains(&n) => m.slow = n,
                _ => return false,
            },
        }
        if m == before {
            return false;
        }
        let i = self.get();
        i.modes = m;
        if !m.invite {
            i.invited.clear();
        }
        true
    }

    /// Lets `t` into an invite-only room; false if it was already.
    pub(super) fn invite(&mut self, t: Target) -> bool {
        let i = self.get();
        if i.invited.contains(&t) {
            return false;
        }
        i.invited.push(t);
        true
    }

    pub(super) fn invited(&self, account: Option<&str>, addr: IpAddr) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|i| i.invited.iter().any(|t| t.hits(account, addr)))
    }

    pub(super) fn invitations(&self) -> &[Target] {
        self.inner.as_ref().map_or(&[], |i| &i.invited)
    }

    /// Slow mode: the milliseconds `conn` must still wait, or `None` (and
    /// its line is counted) if it may speak at `now`.
    pub(super) fn wait_to_speak(&mut self, conn: usize, now: u64) -> Option<u64> {
        let slow = u64::from(self.modes().slow) * 1000;
        if slow == 0 {
            return None;
        }
        let i = self.get();
        if let Some(&last) = i.spoke.get(&conn)
            && now < last + slow
        {
            return Some(last + slow - now);
        }
        if i.spoke.len() > 4096 {
            i.spoke.retain(|_, &mut t| t + slow > now);
        }
        i.spoke.insert(conn, now);
        None
    }

    /// Adds to the log, once: the same entry again (a cluster's record
    /// seen at a restart) is not a second action.
    pub(super) fn log(&mut self, e: Entry) {
        let log = &mut self.get().log;
        if log.contains(&e) {
            return;
        }
        if log.len() >= LOG_KEPT {
            log.pop_front();
        }
        log.push_back(e);
    }

    pub(super) fn entries(&self) -> Vec<Entry> {
        self.inner
            .as_ref()
            .map(|i| i.log.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// `10m`, `2h`, `7d`, `30s` as milliseconds; `None` if it is not one.
pub(super) fn parse_duration(s: &str) -> Option<u64> {
    let (num, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: u64 = num.parse().ok().filter(|&n| n > 0)?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    // A year at most: a longer one is for good, and says so.
    n.checked_mul(ms).filter(|&d| d <= 366 * 86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Some(600_000));
        assert_eq!(parse_duration("2h"), Some(7_200_000));
        assert_eq!(parse_duration("7d"), Some(7 * 86_400_000));
        assert_eq!(parse_duration("0m"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("400d"), None);
        assert_eq!(parse_duration("spam"), None);
    }

    #[test]
    fn restrictions_expire_and_targets_round_trip() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let mut r = Rules::default();
        r.restrict(
            true,
            Restriction {
                target: Target::Account("bob".into()),
                until: 100,
                by: "o".into(),
                reason: String::new(),
                told: false,
            },
        );
        assert!(r.holds(true, Some("bob"), ip, 99).is_some());
        assert!(r.holds(true, Some("bob"), ip, 100).is_none());
        assert!(r.holds(false, Some("bob"), ip, 0).is_none());
        assert!(r.live(true, 200).is_empty());
        for t in [Target::Account("bob".into()), Target::Address(ip)] {
            assert_eq!(Target::decode(&t.encode()), Some(t));
        }
        assert_eq!(Target::decode("account:no spaces"), None);
    }
}

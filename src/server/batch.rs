//! The room lines of one read, joined into one buffer per format.
//!
//! A read from a busy sender carries many lines (a paste, a client catching
//! up, the benchmark's senders at full speed), and each one becomes a
//! fan-out to the same member list. Pushed one by one, every member's queue
//! takes a slot per line and every `writev` a buffer per line: the push
//! loop, the kernel's copy and the queue's bookkeeping all run once per line
//! per member. Joined, they run once per read per member, and a member gets
//! the same bytes in the same order (issue 21: CPU per delivery).
//!
//! Only fan-outs to exactly the same recipients are joined (the same shared
//! member list, the same left-out connections, the same formats), and only
//! while nothing else is queued in between: the reactor settles a batch
//! before it carries out any other output that reaches a connection.

use crate::core::{Bytes, Fanout};
use std::rc::Rc;

/// A joined buffer stops growing here: a member's queue is cut off at the
/// output cap, and a slow reader's queue should hold pieces of a size that
/// one `writev` of the write budget moves several of.
pub const MAX_JOINED: usize = 64 * 1024;

/// One fan-out, or several to the same recipients joined.
pub struct Batch {
    /// The first line's fan-out: its recipients, and its buffers for as
    /// long as it is alone (a line by itself is never copied).
    fanout: Fanout,
    /// Human, machine and stamped lines so far, once a second line joined.
    joined: Option<[Vec<u8>; 3]>,
}

impl Batch {
    pub fn new(fanout: Fanout) -> Batch {
        Batch {
            fanout,
            joined: None,
        }
    }

    /// Joins `next` to the batch if it goes to the same recipients in the
    /// same formats and the joined buffers stay within [`MAX_JOINED`];
    /// otherwise gives it back untouched.
    pub fn join(&mut self, next: Fanout) -> Result<(), Fanout> {
        let f = &self.fanout;
        let same = Rc::ptr_eq(&f.members, &next.members)
            && f.skip_human == next.skip_human
            && f.skip == next.skip
            && f.human.is_some() == next.human.is_some()
            && f.machine.is_some() == next.machine.is_some()
            && f.stamped.is_some() == next.stamped.is_some();
        if !same {
            return Err(next);
        }
        let lens = self.lens();
        let fits = [&next.human, &next.machine, &next.stamped]
            .iter()
            .zip(lens)
            .all(|(b, len)| len + b.as_ref().map_or(0, |b| b.len()) <= MAX_JOINED);
        if !fits {
            return Err(next);
        }
        let f = &self.fanout;
        let joined = self.joined.get_or_insert_with(|| {
            [&f.human, &f.machine, &f.stamped].map(|b| {
                let mut v = Vec::new();
                if let Some(b) = b {
                    v.reserve(4 * b.len());
                    v.extend_from_slice(b);
                }
                v
            })
        });
        for (buf, add) in joined
            .iter_mut()
            .zip([&next.human, &next.machine, &next.stamped])
        {
            if let Some(add) = add {
                buf.extend_from_slice(add);
            }
        }
        Ok(())
    }

    /// Bytes so far in each format.
    fn lens(&self) -> [usize; 3] {
        match &self.joined {
            Some(j) => j.each_ref().map(Vec::len),
            None => [
                &self.fanout.human,
                &self.fanout.machine,
                &self.fanout.stamped,
            ]
            .map(|b| b.as_ref().map_or(0, |b| b.len())),
        }
    }

    /// The batch as one fan-out.
    pub fn into_fanout(self) -> Fanout {
        let mut f = self.fanout;
        if let Some([human, machine, stamped]) = self.joined {
            let each = |slot: &mut Option<Bytes>, v: Vec<u8>| {
                if slot.is_some() {
                    *slot = Some(Bytes::from(v));
                }
            };
            each(&mut f.human, human);
            each(&mut f.machine, machine);
            each(&mut f.stamped, stamped);
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::members::Member;
    use crate::proto::Format;

    fn members(n: usize) -> Rc<Vec<Member>> {
        Rc::new(
            (0..n)
                .filter_map(|i| {
                    let f = if i % 2 == 0 {
                        Format::Human
                    } else {
                        Format::Machine
                    };
                    Member::new(i, f)
                })
                .collect(),
        )
    }

    fn line(m: &Rc<Vec<Member>>, text: &str, skip_human: Option<usize>) -> Fanout {
        Fanout {
            members: m.clone(),
            human: Some(format!("h {text}\n").into()),
            machine: Some(format!("m {text}\n").into()),
            stamped: None,
            skip_human,
            skip: Vec::new(),
        }
    }

    fn got(f: &Fanout) -> Vec<(usize, String)> {
        f.deliveries()
            .map(|(c, b)| (c, String::from_utf8_lossy(b).into_owned()))
            .collect()
    }

    #[test]
    fn lines_to_the_same_members_arrive_joined_in_order() {
        let m = members(4);
        let mut b = Batch::new(line(&m, "one", Some(0)));
        assert!(b.join(line(&m, "two", Some(0))).is_ok());
        assert!(b.join(line(&m, "three", Some(0))).is_ok());
        let f = b.into_fanout();
        assert_eq!(
            got(&f),
            vec![
                (1, "m one\nm two\nm three\n".to_string()),
                (2, "h one\nh two\nh three\n".to_string()),
                (3, "m one\nm two\nm three\n".to_string()),
            ]
        );
        assert!(f.stamped.is_none(), "a format nobody reads was made up");
    }

    #[test]
    fn a_line_alone_is_not_copied() {
        let m = members(2);
        let first = line(&m, "one", None);
        let human = first.human.clone().expect("human");
        let f = Batch::new(first).into_fanout();
        assert!(Bytes::ptr_eq(f.human.as_ref().expect("human"), &human));
    }

    #[test]
    fn other_recipients_are_not_joined() {
        let (m, other) = (members(3), members(3));
        let mut b = Batch::new(line(&m, "one", Some(0)));
        assert!(b.join(line(&other, "x", Some(0))).is_err(), "other list");
        assert!(b.join(line(&m, "x", Some(2))).is_err(), "other sender");
        let mut ignored = line(&m, "x", Some(0));
        ignored.skip = vec![1];
        assert!(b.join(ignored).is_err(), "someone ignores this sender");
        let mut stamped = line(&m, "x", Some(0));
        stamped.stamped = Some(b"s x\n".to_vec().into());
        assert!(b.join(stamped).is_err(), "other formats");
        assert_eq!(got(&b.into_fanout()).len(), 2, "the batch changed");
    }

    #[test]
    fn a_batch_stops_at_its_size() {
        let m = members(2);
        let big = "x".repeat(MAX_JOINED / 2);
        let mut b = Batch::new(line(&m, &big, None));
        assert!(b.join(line(&m, "small", None)).is_ok());
        assert!(b.join(line(&m, &big, None)).is_err(), "grew past the cap");
        let f = b.into_fanout();
        assert!(f.human.as_ref().is_some_and(|h| h.len() <= MAX_JOINED));
    }
}

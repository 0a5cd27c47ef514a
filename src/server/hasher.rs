//! The password-hashing worker: one thread, jobs in, outcomes out, a wake-up
//! of the loop after each. A hash takes a noticeable fraction of a second
//! (600,000 PBKDF2 rounds); the loop never waits for one.
//!
//! The job channel is bounded by the core, which never has more than
//! `--max-hash-jobs` jobs in flight.

use std::io;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use mio::Waker;

use crate::core::{HashJob, HashOutcome, run_hash_job};

pub struct Hasher {
    jobs: mpsc::Sender<HashJob>,
    done: mpsc::Receiver<(u64, HashOutcome)>,
}

impl Hasher {
    pub fn spawn(waker: Arc<Waker>) -> io::Result<Hasher> {
        let (job_tx, job_rx) = mpsc::channel::<HashJob>();
        let (done_tx, done_rx) = mpsc::channel();
        thread::Builder::new()
            .name("chatd-hash".into())
            .spawn(move || {
                // Ends when the server (the only sender) is dropped.
                while let Ok(job) = job_rx.recv() {
                    let outcome = run_hash_job(&job);
                    if done_tx.send((job.id, outcome)).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            })?;
        Ok(Hasher {
            jobs: job_tx,
            done: done_rx,
        })
    }

    /// Hands a job over; gives it back if the worker is gone (it cannot
    /// panic on any input, but if it did, the job must fail, not hang).
    pub fn send(&self, job: HashJob) -> Result<(), HashJob> {
        self.jobs.send(job).map_err(|e| e.0)
    }

    /// Outcomes that are ready.
    pub fn done(&self) -> Vec<(u64, HashOutcome)> {
        self.done.try_iter().collect()
    }
}

//! The attacks of issue 6, short versions, against the real binary while an
//! honest client chats (through `chatd-bench abuse`, whose long versions
//! give the figures in the notes). What is asserted: the honest client lost
//! nothing, memory stayed under the documented bound, no descriptor leaked,
//! the daemon is alive and never panicked. Latency is reported, not asserted:
//! it is a measurement, and this machine is small and shared.

use std::process::Command;

use crate::util::Daemon;

/// The bound chatd(8) documents for these attacks: resident memory under
/// 128 MiB (the upload budget is 64 MiB of it).
const RSS_BOUND_KIB: u64 = 128 * 1024;

fn field(json: &str, key: &str) -> String {
    let at = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    json[at + key.len() + 3..]
        .split([',', '}'])
        .next()
        .unwrap()
        .trim_matches('"')
        .to_string()
}

fn attack(scenario: &str, daemon_flags: &[&str]) -> String {
    let d = Daemon::start(daemon_flags);
    let out = Command::new(env!("CARGO_BIN_EXE_chatd-bench"))
        .args([
            "abuse",
            scenario,
            "--addr",
            &d.addr().to_string(),
            "--pid",
            &d.pid().to_string(),
        ])
        .args(["--size", "short", "--seconds", "4"])
        .output()
        .expect("run chatd-bench");
    let json = String::from_utf8_lossy(&out.stdout).trim().to_string();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "chatd-bench failed: {json}");
    assert_eq!(field(&json, "honest_lost"), "0", "{json}");
    assert!(
        field(&json, "honest_sent").parse::<u64>().unwrap() >= 10,
        "{json}"
    );
    assert_eq!(
        field(&json, "fds_after"),
        field(&json, "fds_before"),
        "descriptor leak: {json}"
    );
    assert!(
        field(&json, "rss_max_kib").parse::<u64>().unwrap() < RSS_BOUND_KIB,
        "{json}"
    );
    assert_eq!(field(&json, "daemon_alive"), "true", "{json}");
    assert!(
        !d.log().iter().any(|l| l.contains("panicked")),
        "{:?}",
        d.log()
    );
    json
}

/// All attackers come from 127.0.0.1 here, so per-address limits are lifted
/// to let one machine play a crowd and reach the defences behind them.
const CROWD: [&str; 4] = ["--max-per-ip", "100000", "--conn-rate", "0"];

#[test]
fn slowloris() {
    let j = attack("slowloris", &CROWD);
    assert_eq!(field(&j, "connections"), "300");
}

#[test]
fn giant_lines() {
    let j = attack("giant", &CROWD);
    assert!(
        field(&j, "bytes_sent").parse::<u64>().unwrap() > 10 << 20,
        "{j}"
    );
}

#[test]
fn flood() {
    let j = attack("flood", &CROWD);
    assert!(
        field(&j, "connections_cut").parse::<u64>().unwrap() > 0,
        "flooders are cut off: {j}"
    );
}

#[test]
fn slow_readers() {
    // A small output cap, so the non-readers pass it within the short run.
    let mut flags = CROWD.to_vec();
    flags.extend(["--max-image", "10000", "--max-queue", "200000"]);
    let j = attack("slowread", &flags);
    assert!(field(&j, "sleepers_cut").parse::<u64>().unwrap() > 0, "{j}");
}

#[test]
fn connection_storm_meets_the_limits() {
    // Default limits: the storm runs into --conn-rate and --max-per-ip.
    let j = attack("storm", &[]);
    assert_eq!(field(&j, "refused_with_reason"), "1", "{j}");
}

#[test]
fn garbage() {
    attack("garbage", &CROWD);
}

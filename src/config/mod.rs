//! Validated daemon settings. The binary's flags are raw input; [`Config`] is
//! what the server runs with, and building it is where nonsense (a zero queue,
//! a line limit too small to hold a command) is refused with a reason.

mod flags;

pub use flags::Flags;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::core::CoreConfig;
use crate::journal::FsyncMode;
use crate::proto;

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub core: CoreConfig,
    /// Bytes queued for one connection before it is dropped as a slow reader.
    pub max_queue: usize,
    /// SO_SNDBUF for chat connections; 0 leaves the kernel's autotuning.
    pub socket_buffer: usize,
    /// Bytes of partly received lines held across all connections before
    /// the largest upload in progress is abandoned.
    pub max_pending: usize,
    /// Where the journal lives; `None` keeps nothing (`--ephemeral`).
    pub state_dir: Option<PathBuf>,
    pub fsync: FsyncMode,
    /// The HTTP status listener, off by default.
    pub status: Option<SocketAddr>,
    /// The TLS listener, off by default.
    pub tls: Option<TlsConfig>,
    /// `--cluster`: share rooms, nicks and history through NATS.
    pub cluster: Option<crate::nats::ClusterConfig>,
    /// Said after "server is shutting down" when it stops; may be empty.
    pub shutdown_message: String,
    /// The browser client on chat ports; `None` with `--no-web`.
    pub web: Option<crate::web::WebConfig>,
    /// `--web-listen`: ports that speak only HTTP and WebSocket.
    pub web_listen: Vec<SocketAddr>,
}

/// `--tls-listen` and what goes with it.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub listen: Vec<SocketAddr>,
    /// PEM: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// A handshake not finished by then is cut off.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; past it new TLS connections are
    /// refused, so a crowd of stalled handshakes costs a bounded amount.
    pub max_handshakes: usize,
}

/// The state directory for a user running chatd by hand.
pub const DEFAULT_STATE_DIR: &str = "chatd-state";

/// Lowest `--hash-iterations` accepted (tests); the default is far higher.
pub const MIN_HASH_ITERATIONS: u32 = 1000;

/// The raw numbers, as flags give them; see `chatd --help` for each.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: Vec<String>,
    pub name: String,
    pub default_rooms: Vec<String>,
    pub max_line: usize,
    pub max_image: u64,
    pub max_conns: usize,
    pub max_per_ip: usize,
    pub max_queue: usize,
    pub socket_buffer: usize,
    pub max_pending: usize,
    pub conn_rate: f64,
    pub conn_burst: u32,
    pub rate: f64,
    pub burst: u32,
    pub paste_lines: usize,
    pub admins: Vec<String>,
    pub max_sessions: usize,
    pub search_budget: usize,
    pub shutdown_message: String,
    pub name_timeout: u64,
    pub idle_timeout: u64,
    pub history: usize,
    pub history_on_join: usize,
    pub history_bytes: usize,
    pub history_total: usize,
    pub history_envelope: usize,
    pub quiet_room: usize,
    pub max_joined: usize,
    pub max_rooms: usize,
    pub max_owned: usize,
    pub max_rooms_per_ip: usize,
    pub register_per_hour: u32,
    pub max_hash_jobs: usize,
    pub dm_history: usize,
    pub hash_iterations: u32,
    /// `--state-dir`, if given.
    pub state_dir: Option<String>,
    /// `$STATE_DIRECTORY` (set by systemd), if set.
    pub state_env: Option<String>,
    pub ephemeral: bool,
    pub fsync: String,
    pub status: Option<String>,
    pub tls_listen: Vec<String>,
    pub no_web: bool,
    pub web_listen: Vec<String>,
    pub web_origin: Vec<String>,
    pub trusted_proxy: Vec<String>,
    pub web_ping: u64,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub tls_handshake_timeout: u64,
    pub max_handshakes: usize,
    /// `--cluster` URLs (`nats://HOST:PORT`).
    pub cluster: Vec<String>,
    /// `--node`; the host name if not given.
    pub node: Option<String>,
    pub cluster_replicas: Option<usize>,
    pub node_timeout: u64,
}

/// Bounds of the duration flags, in seconds: past them a value is a typo,
/// and far past them it overflows the clock.
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
const YEAR: u64 = 365 * DAY;

/// An origin as browsers send it: `http://` or `https://`, then a host
/// (and port), nothing after.
fn valid_origin(o: &str) -> bool {
    let rest = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
        .map(|r| r.trim_end_matches('/'));
    rest.is_some_and(|r| !r.is_empty() && !r.contains('/') && !r.chars().any(char::is_whitespace))
}

/// Default port when an address is given without one.
pub const DEFAULT_PORT: u16 = 9999;

/// A setting that cannot be used; `Display` says which and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn bad(s: impl Into<String>) -> ConfigError {
    ConfigError(s.into())
}

/// Parses `HOST:PORT`, `[V6]:PORT`, `:PORT`, a bare port, or a bare address.
pub fn parse_listen(s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    if let Ok(port) = s.strip_prefix(':').unwrap_or(s).parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    Err(bad(format!(
        "--listen {s}: expected ADDR:PORT (like 0.0.0.0:9999 or [::1]:9999) or a port"
    )))
}

impl Settings {
    pub fn validate(self) -> Result<Config, ConfigError> {
        let cluster = self.cluster_config()?;
        let listen = if self.listen.is_empty() {
            vec![SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))]
        } else {
            self.listen
                .iter()
                .map(|s| parse_listen(s))
                .collect::<Result<_, _>>()?
        };
        if self.max_line < 64 {
            return Err(bad("--max-line must be at least 64 bytes"));
        }
        if self.max_image == 0 {
            return Err(bad("--max-image must be at least 1 byte"));
        }
        let bulk = crate::codec::bulk_limit(self.max_image);
        if self.max_queue < self.max_line.max(bulk) {
            return Err(bad(format!(
                "--max-queue must hold at least one line: {} bytes or more (the base64 of --max-image, plus the command)",
                self.max_line.max(bulk)
            )));
        }
        if self.max_pending < bulk {
            return Err(bad(format!(
                "--max-pending must hold at least one upload: {bulk} bytes or more"
            )));
        }
        if self.max_conns == 0 || self.max_per_ip == 0 {
            return Err(bad("--max-conns and --max-per-ip must be at least 1"));
        }
        if !self.rate.is_finite() || self.rate < 0.0 {
            return Err(bad(
                "--rate must be 0 (off) or a positive number of lines per second",
            ));
        }
        if self.burst == 0 {
            return Err(bad("--burst must be at least 1"));
        }
        if !self.conn_rate.is_finite() || self.conn_rate < 0.0 || self.conn_burst == 0 {
            return Err(bad(
                "--conn-rate must be 0 (off) or positive, and --conn-burst at least 1",
            ));
        }
        if !(1..=DAY).contains(&self.name_timeout) {
            return Err(bad(format!(
                "--name-timeout must be 1 to {DAY} seconds (a day)"
            )));
        }
        if self.idle_timeout > YEAR {
            return Err(bad(format!(
                "--idle-timeout must be 0 (never) to {YEAR} seconds (a year)"
            )));
        }
        if let Some(a) = self.admins.iter().find(|a| !proto::valid_nick(a)) {
            return Err(bad(format!("--admin {a}: {}", proto::NICK_RULE)));
        }
        if !(1..=100).contains(&self.max_sessions) {
            return Err(bad("--max-sessions must be 1 to 100"));
        }
        if self.paste_lines > 1000 {
            return Err(bad("--paste-lines must be 0 to 1000"));
        }
        if self.search_budget < 4096 {
            return Err(bad("--search-budget must be at least 4096"));
        }
        if self.shutdown_message.chars().count() > 200
            || self.shutdown_message.chars().any(char::is_control)
        {
            return Err(bad(
                "--shutdown-message must be at most 200 printable characters",
            ));
        }
        if self.history_bytes < 1024 {
            return Err(bad("--history-bytes must be at least 1024"));
        }
        if self.max_joined == 0 || self.max_rooms == 0 || self.max_rooms_per_ip == 0 {
            return Err(bad(
                "--max-joined, --max-rooms and --max-rooms-per-ip must be at least 1",
            ));
        }
        if self.max_hash_jobs == 0 {
            return Err(bad("--max-hash-jobs must be at least 1"));
        }
        let mut default_rooms = Vec::new();
        for r in &self.default_rooms {
            match proto::RoomRef::parse(r) {
                Ok(proto::RoomRef::Public(n)) => default_rooms.push(n),
                _ => {
                    return Err(bad(format!("--default-room {r}: {}", proto::ROOM_RULE)));
                }
            }
        }
        if default_rooms.is_empty() {
            default_rooms.push("#lobby".to_string());
        }
        if self.name.is_empty() || self.name.chars().any(|c| c.is_control()) {
            return Err(bad("--name must be non-empty printable text"));
        }
        let max_iterations = crate::core::MAX_HASH_ITERATIONS;
        if !(MIN_HASH_ITERATIONS..=max_iterations).contains(&self.hash_iterations) {
            return Err(bad(format!(
                "--hash-iterations must be {MIN_HASH_ITERATIONS} to {max_iterations}"
            )));
        }
        let fsync: FsyncMode = self.fsync.parse().map_err(bad)?;
        let tls = self.tls()?;
        let (web, web_listen) = self.web()?;
        // systemd's StateDirectory= wins; it may list several, colon-separated.
        let state_dir = if self.ephemeral {
            None
        } else if let Some(env) = self.state_env.as_deref().filter(|e| !e.is_empty()) {
            Some(PathBuf::from(env.split(':').next().unwrap_or(env)))
        } else {
            Some(PathBuf::from(
                self.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR),
            ))
        };
        let core = CoreConfig {
            server_name: self.name,
            default_rooms,
            max_line: self.max_line,
            max_image: self.max_image,
            max_conns: self.max_conns,
            max_per_ip: self.max_per_ip,
            conn_rate: self.conn_rate,
            conn_burst: self.conn_burst,
            rate: self.rate,
            burst: self.burst,
            paste_lines: self.paste_lines.min(1000),
            // Each held line may be as long as a line may be, within 64 KiB
            // per connection however long the lines are.
            paste_bytes: 64 * 1024,
            search_budget: self.search_budget,
            name_timeout: Duration::from_secs(self.name_timeout),
            idle_timeout: (self.idle_timeout > 0).then(|| Duration::from_secs(self.idle_timeout)),
            history_keep: self.history,
            history_on_join: self.history_on_join.min(self.history),
            history_bytes: self.history_bytes,
            history_total: self.history_total.max(self.history_bytes),
            history_envelope: self.history_envelope,
            // A quarter of a connection's output budget: history on top of
            // a busy room's traffic never makes a joiner a slow reader.
            history_burst: (self.max_queue / 4).max(self.max_line),
            quiet_room: self.quiet_room,
            max_joined: self.max_joined,
            max_rooms: self.max_rooms,
            dm_keep: self.dm_history,
            hash_iterations: self.hash_iterations,
            max_hash_jobs: self.max_hash_jobs,
            registrations_per_hour: self.register_per_hour,
            max_owned: self.max_owned,
            max_rooms_per_ip: self.max_rooms_per_ip,
            admins: self.admins.iter().map(|a| proto::fold(a)).collect(),
            max_sessions: self.max_sessions,
        };
        Ok(Config {
            listen,
            core,
            max_queue: self.max_queue,
            socket_buffer: self.socket_buffer,
            max_pending: self.max_pending,
            state_dir,
            fsync,
            status: self
                .status
                .as_deref()
                .map(|s| {
                    parse_listen(s).map_err(|_| {
                        bad(format!(
                            "--status {s}: expected ADDR:PORT, like 127.0.0.1:9998"
                        ))
                    })
                })
                .transpose()?,
            tls,
            cluster,
            shutdown_message: self.shutdown_message,
            web,
            web_listen,
        })
    }

    /// `--no-web`, `--web-listen`, `--web-origin`, `--trusted-proxy`.
    fn web(&self) -> Result<(Option<crate::web::WebConfig>, Vec<SocketAddr>), ConfigError> {
        let web_listen = self
            .web_listen
            .iter()
            .map(|s| {
                parse_listen(s).map_err(|_| {
                    bad(format!(
                        "--web-listen {s}: expected ADDR:PORT, like 127.0.0.1:8080"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.no_web && !web_listen.is_empty() {
            return Err(bad("--no-web and --web-listen contradict each other"));
        }
        for o in &self.web_origin {
            if o != "*" && !valid_origin(o) {
                return Err(bad(format!(
                    "--web-origin {o}: expected scheme://host[:port], like https://chat.example.org, or *"
                )));
            }
        }
        let trusted_proxies = self
            .trusted_proxy
            .iter()
            .map(|s| {
                s.parse::<std::net::IpAddr>().map_err(|_| {
                    bad(format!(
                        "--trusted-proxy {s}: expected an IP address, like 127.0.0.1"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !(1..=HOUR).contains(&self.web_ping) {
            return Err(bad(format!("--web-ping must be 1 to {HOUR} seconds")));
        }
        if self.no_web {
            return Ok((None, web_listen));
        }
        Ok((
            Some(crate::web::WebConfig {
                origins: self
                    .web_origin
                    .iter()
                    .map(|o| o.trim_end_matches('/').to_string())
                    .collect(),
                trusted_proxies,
                ping_interval: Duration::from_secs(self.web_ping),
            }),
            web_listen,
        ))
    }

    fn cluster_config(&self) -> Result<Option<crate::nats::ClusterConfig>, ConfigError> {
        if self.cluster.is_empty() {
            if self.node.is_some() {
                return Err(bad(
                    "--node names this server in a cluster: give --cluster nats://HOST:PORT too",
                ));
            }
            return Ok(None);
        }
        for url in &self.cluster {
            let rest = url.strip_prefix("nats://").unwrap_or(url);
            let ok = rest
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(bad(format!(
                    "--cluster {url}: expected nats://HOST:PORT, like nats://127.0.0.1:4222"
                )));
            }
        }
        let node = match &self.node {
            Some(n) => n.clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
        };
        let valid = !node.is_empty()
            && node.len() <= 32
            && node
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(bad(format!(
                "--node {node:?}: 1-32 letters, digits, _ or -, unique in the cluster"
            )));
        }
        if !(2..=HOUR).contains(&self.node_timeout) {
            return Err(bad(format!(
                "--node-timeout must be 2 (nodes beat every second) to {HOUR} seconds"
            )));
        }
        // Three copies survive one NATS server down; two would not (Raft
        // needs a majority), so two servers given still means three.
        let default = if self.cluster.len() > 1 { 3 } else { 1 };
        let replicas = self.cluster_replicas.unwrap_or(default);
        if !(1..=5).contains(&replicas) {
            return Err(bad("--cluster-replicas must be 1 to 5"));
        }
        Ok(Some(crate::nats::ClusterConfig {
            servers: self.cluster.clone(),
            node,
            history_keep: i64::try_from(self.history).unwrap_or(i64::MAX),
            dm_keep: i64::try_from(self.dm_history).unwrap_or(i64::MAX),
            replicas,
            expire: Duration::from_secs(self.node_timeout),
        }))
    }

    /// The TLS listener: `--tls-cert` and `--tls-key`, with `--tls-listen`
    /// or sockets from systemd; or none of them.
    fn tls(&self) -> Result<Option<TlsConfig>, ConfigError> {
        let (cert, key) = (self.tls_cert.as_deref(), self.tls_key.as_deref());
        if self.tls_listen.is_empty() && cert.is_none() && key.is_none() {
            return Ok(None);
        }
        // Certificate and key without --tls-listen: for sockets named "tls"
        // from systemd (checked when the server starts).
        let (Some(cert), Some(key)) = (cert, key) else {
            return Err(bad(
                "--tls-listen needs --tls-cert FILE and --tls-key FILE (PEM; contrib/tls/make-cert makes a pair)",
            ));
        };
        if !(1..=HOUR).contains(&self.tls_handshake_timeout) || self.max_handshakes == 0 {
            return Err(bad(format!(
                "--tls-handshake-timeout must be 1 to {HOUR} seconds, and --max-handshakes at least 1"
            )));
        }
        let listen = self
            .tls_listen
            .iter()
            .map(|s| {
                parse_listen(s).map_err(|_| {
                    bad(format!(
                        "--tls-listen {s}: expected ADDR:PORT, like 0.0.0.0:9998"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(TlsConfig {
            listen,
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
            handshake_timeout: Duration::from_secs(self.tls_handshake_timeout),
            max_handshakes: self.max_handshakes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen("127.0.0.1:5").unwrap().port(), 5);
        assert_eq!(parse_listen("[::1]:7").unwrap().port(), 7);
        assert_eq!(parse_listen(":8").unwrap().port(), 8);
        assert_eq!(parse_listen("9").unwrap().port(), 9);
        assert_eq!(parse_listen("::1").unwrap().port(), DEFAULT_PORT);
        assert!(parse_listen("nope").is_err());
    }

    fn with(args: &[&str]) -> Result<Config, ConfigError> {
        Flags::parse(args).map_err(bad)?.settings(None).validate()
    }

    #[test]
    fn duration_flags_are_bounded_with_a_reason() {
        assert!(with(&["--ephemeral"]).is_ok());
        let huge = u64::MAX.to_string();
        for flag in [
            "--idle-timeout",
            "--name-timeout",
            "--tls-handshake-timeout",
            "--node-timeout",
        ] {
            let mut args = vec!["--ephemeral", flag, &huge];
            if flag == "--tls-handshake-timeout" {
                args.extend([
                    "--tls-listen",
                    "127.0.0.1:0",
                    "--tls-cert",
                    "c",
                    "--tls-key",
                    "k",
                ]);
            }
            if flag == "--node-timeout" {
                args.extend(["--cluster", "nats://127.0.0.1:4222"]);
            }
            let e = with(&args).expect_err(flag).0;
            assert!(e.starts_with(flag) && e.contains("seconds"), "{e}");
        }
        assert!(with(&["--ephemeral", "--idle-timeout", "0"]).is_ok());
        assert!(with(&["--ephemeral", "--name-timeout", "86400"]).is_ok());
    }
}

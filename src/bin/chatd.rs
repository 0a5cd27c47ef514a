//! `chatd`: parse flags, validate them, bind, run. All logic lives in the
//! library; this file only turns the command line into a [`Config`].

use std::process::ExitCode;

use argh::FromArgs;
use chatd::config::Settings;
use chatd::logfile::LogFile;
use chatd::server::Server;

/// chatd: a chat daemon anyone can join with `nc HOST 9999`.
#[derive(FromArgs, Debug)]
struct Flags {
    /// address to listen on, ADDR:PORT or a port; repeatable (default 0.0.0.0:9999)
    #[argh(option)]
    listen: Vec<String>,
    /// server name shown in the greeting (default chatd)
    #[argh(option, default = "String::from(\"chatd\")")]
    name: String,
    /// a room that always exists; repeatable; everyone joins the first (default #lobby)
    #[argh(option)]
    default_room: Vec<String>,
    /// longest text line accepted, in bytes (default 4096)
    #[argh(option, default = "4096")]
    max_line: usize,
    /// largest image or file, in decoded bytes (default 2097152 = 2 MiB)
    #[argh(option, default = "2 * 1024 * 1024")]
    max_image: u64,
    /// most connections at once (default 10000)
    #[argh(option, default = "10_000")]
    max_conns: usize,
    /// most connections from one IP address (default 20)
    #[argh(option, default = "20")]
    max_per_ip: usize,
    /// bytes queued for one connection before it is dropped as a slow reader (default 4194304 = 4 MiB)
    #[argh(option, default = "4 * 1024 * 1024")]
    max_queue: usize,
    /// bytes of partly received lines held across all connections; past it the largest upload in progress is discarded (default 67108864 = 64 MiB)
    #[argh(option, default = "64 * 1024 * 1024")]
    max_pending: usize,
    /// new connections per second from one IP address, a token bucket; 0 turns it off (default 20)
    #[argh(option, default = "20.0")]
    conn_rate: f64,
    /// new connections one IP address may open at once before --conn-rate applies (default 50)
    #[argh(option, default = "50")]
    conn_burst: u32,
    /// lines per second per connection, a token bucket; 0 turns it off (default 10)
    #[argh(option, default = "10.0")]
    rate: f64,
    /// lines a connection may send at once before the rate applies (default 20)
    #[argh(option, default = "20")]
    burst: u32,
    /// seconds a new connection has to choose a nick (default 60)
    #[argh(option, default = "60")]
    name_timeout: u64,
    /// seconds without a line before a named connection is closed; 0 never (default 3600)
    #[argh(option, default = "3600")]
    idle_timeout: u64,
    /// messages kept per room, on disk and in memory (default 500)
    #[argh(option, default = "500")]
    history: usize,
    /// messages shown when joining a room (default 50)
    #[argh(option, default = "50")]
    history_on_join: usize,
    /// rooms with more members than this stop announcing joins and leaves (default 100)
    #[argh(option, default = "100")]
    quiet_room: usize,
    /// most rooms one connection may be in (default 50)
    #[argh(option, default = "50")]
    max_joined: usize,
    /// most rooms on the server (default 1000)
    #[argh(option, default = "1000")]
    max_rooms: usize,
    /// direct messages kept per conversation between registered users, and waiting per offline user (default 200)
    #[argh(option, default = "200")]
    dm_history: usize,
    /// directory for the journal; $STATE_DIRECTORY wins when set (default ./chatd-state)
    #[argh(option)]
    state_dir: Option<String>,
    /// keep nothing on disk: history, accounts and rooms last as long as the process
    #[argh(switch)]
    ephemeral: bool,
    /// when the journal is synced: always (before any output of the same loop iteration), batch (at most once a second) or never (default always)
    #[argh(option, default = "String::from(\"always\")")]
    fsync: String,
    /// PBKDF2 iterations for new password hashes; lowering it weakens stored passwords (default 600000)
    #[argh(option, default = "600_000")]
    hash_iterations: u32,
    /// serve /health, /stats, /metrics and a live dashboard over HTTP on ADDR:PORT (default off)
    #[argh(option)]
    status: Option<String>,
    /// also serve the chat over TLS on ADDR:PORT, with --tls-cert and --tls-key (repeatable, default off)
    #[argh(option)]
    tls_listen: Vec<String>,
    /// PEM certificate chain for --tls-listen, leaf first
    #[argh(option)]
    tls_cert: Option<String>,
    /// PEM private key for --tls-listen (PKCS#8, PKCS#1 or SEC1)
    #[argh(option)]
    tls_key: Option<String>,
    /// seconds a TLS handshake may take before the connection is cut off (default 10)
    #[argh(option, default = "10")]
    tls_handshake_timeout: u64,
    /// TLS handshakes in progress at once; more are refused (default 256)
    #[argh(option, default = "256")]
    max_handshakes: usize,
    /// join a cluster through this NATS server, nats://HOST:PORT (repeatable; default: no cluster)
    #[argh(option)]
    cluster: Vec<String>,
    /// this server's name in the cluster, unique there (default: the host name)
    #[argh(option)]
    node: Option<String>,
    /// copies JetStream keeps of the cluster's streams and buckets (default: 3 if several --cluster servers are given, else 1)
    #[argh(option)]
    cluster_replicas: Option<usize>,
    /// seconds without a heartbeat before a node's people are dropped from presence (default 5)
    #[argh(option, default = "5")]
    node_timeout: u64,
    /// append logs to this file instead of stderr; SIGHUP reopens it (default stderr)
    #[argh(option)]
    log_file: Option<String>,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
}

fn main() -> ExitCode {
    let flags: Flags = argh::from_env();
    if flags.version {
        println!("chatd {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    let log_file = match flags
        .log_file
        .as_deref()
        .map(|p| LogFile::open(std::path::Path::new(p)))
    {
        None => None,
        Some(Ok(f)) => {
            logger.target(env_logger::Target::Pipe(Box::new(f.clone())));
            Some(f)
        }
        Some(Err(e)) => {
            eprintln!("chatd: --log-file: {e}");
            return ExitCode::from(2);
        }
    };
    logger.init();
    let settings = Settings {
        listen: flags.listen,
        name: flags.name,
        default_rooms: flags.default_room,
        max_line: flags.max_line,
        max_image: flags.max_image,
        max_conns: flags.max_conns,
        max_per_ip: flags.max_per_ip,
        max_queue: flags.max_queue,
        max_pending: flags.max_pending,
        conn_rate: flags.conn_rate,
        conn_burst: flags.conn_burst,
        rate: flags.rate,
        burst: flags.burst,
        name_timeout: flags.name_timeout,
        idle_timeout: flags.idle_timeout,
        history: flags.history,
        history_on_join: flags.history_on_join,
        quiet_room: flags.quiet_room,
        max_joined: flags.max_joined,
        max_rooms: flags.max_rooms,
        dm_history: flags.dm_history,
        hash_iterations: flags.hash_iterations,
        state_dir: flags.state_dir,
        state_env: std::env::var("STATE_DIRECTORY").ok(),
        ephemeral: flags.ephemeral,
        fsync: flags.fsync,
        status: flags.status,
        tls_listen: flags.tls_listen,
        tls_cert: flags.tls_cert,
        tls_key: flags.tls_key,
        tls_handshake_timeout: flags.tls_handshake_timeout,
        max_handshakes: flags.max_handshakes,
        cluster: flags.cluster,
        node: flags.node,
        cluster_replicas: flags.cluster_replicas,
        node_timeout: flags.node_timeout,
    };
    let cfg = match settings.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chatd: {e}");
            return ExitCode::from(2);
        }
    };
    let mut server = match Server::from_config(cfg) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(1);
        }
    };
    if let Some(f) = log_file {
        server.set_log_file(f);
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("event loop failed: {e}");
            ExitCode::from(1)
        }
    }
}

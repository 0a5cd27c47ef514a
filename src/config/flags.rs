//! The daemon's command line, as argh reads it: raw input, turned into
//! [`Settings`] here and validated into a `Config` by `Settings::validate`.
//! It lives in the library so that tests start an in-process server with the
//! very flags they would give the binary.

use argh::FromArgs;

use super::Settings;

/// chatd: a chat daemon anyone can join with `nc HOST 9999`. (`chatd export` writes its logs from the journal.)
#[derive(FromArgs, Debug)]
pub struct Flags {
    /// address to listen on, ADDR:PORT or a port; repeatable (default 0.0.0.0:9999)
    #[argh(option)]
    pub listen: Vec<String>,
    /// server name shown in the greeting (default chatd)
    #[argh(option, default = "String::from(\"chatd\")")]
    pub name: String,
    /// a room that always exists; repeatable; everyone joins the first (default #lobby)
    #[argh(option)]
    pub default_room: Vec<String>,
    /// longest text line accepted, in bytes (default 4096)
    #[argh(option, default = "4096")]
    pub max_line: usize,
    /// largest image or file, in decoded bytes (default 2097152 = 2 MiB)
    #[argh(option, default = "2 * 1024 * 1024")]
    pub max_image: u64,
    /// most connections at once (default 10000)
    #[argh(option, default = "10_000")]
    pub max_conns: usize,
    /// most connections from one IP address (default 20)
    #[argh(option, default = "20")]
    pub max_per_ip: usize,
    /// bytes queued for one connection before it is dropped as a slow reader (default 4194304 = 4 MiB)
    #[argh(option, default = "4 * 1024 * 1024")]
    pub max_queue: usize,
    /// kernel send buffer of each chat connection (SO_SNDBUF), in bytes; 0 leaves the kernel's autotuning (default 262144)
    #[argh(option, default = "256 * 1024")]
    pub socket_buffer: usize,
    /// bytes of partly received lines held across all connections; past it the largest upload in progress is discarded (default 67108864 = 64 MiB)
    #[argh(option, default = "64 * 1024 * 1024")]
    pub max_pending: usize,
    /// new connections per second from one IP address, a token bucket; 0 turns it off (default 20)
    #[argh(option, default = "20.0")]
    pub conn_rate: f64,
    /// new connections one IP address may open at once before --conn-rate applies (default 50)
    #[argh(option, default = "50")]
    pub conn_burst: u32,
    /// sessions one account may have at once, each with its own rooms, all getting its direct messages (default 5)
    #[argh(option, default = "5")]
    pub max_sessions: usize,
    /// a registered nick that is a server admin: it may moderate every room; repeatable
    #[argh(option)]
    pub admin: Vec<String>,
    /// lines past --burst held and sent in order as the rate allows (a paste) rather than dropped, per connection; 0 drops them (default 50)
    #[argh(option, default = "50")]
    pub paste_lines: usize,
    /// bytes of kept text one /search reads at most, newest first (default 4194304 = 4 MiB)
    #[argh(option, default = "4 * 1024 * 1024")]
    pub search_budget: usize,
    /// what everyone is told when the server stops (SIGTERM), after "server is shutting down" (default: nothing more)
    #[argh(option, default = "String::new()")]
    pub shutdown_message: String,
    /// lines per second per connection, a token bucket; 0 turns it off (default 10)
    #[argh(option, default = "10.0")]
    pub rate: f64,
    /// lines a connection may send at once before the rate applies (default 20)
    #[argh(option, default = "20")]
    pub burst: u32,
    /// seconds a new connection has to choose a nick (default 60)
    #[argh(option, default = "60")]
    pub name_timeout: u64,
    /// seconds without a line before a named connection is closed; 0 never (default 3600)
    #[argh(option, default = "3600")]
    pub idle_timeout: u64,
    /// messages kept per room, on disk and in memory (default 500)
    #[argh(option, default = "500")]
    pub history: usize,
    /// messages shown when joining a room (default 50)
    #[argh(option, default = "50")]
    pub history_on_join: usize,
    /// bytes of history kept per room; the oldest lines go first (default 1048576 = 1 MiB)
    #[argh(option, default = "1024 * 1024")]
    pub history_bytes: usize,
    /// bytes of history kept in all rooms together; past it the fullest room loses its oldest lines (default 67108864 = 64 MiB)
    #[argh(option, default = "64 * 1024 * 1024")]
    pub history_total: usize,
    /// end-to-end envelopes larger than this are kept in history as a notice only (default 16384)
    #[argh(option, default = "16 * 1024")]
    pub history_envelope: usize,
    /// rooms with more members than this stop announcing joins and leaves (default 100)
    #[argh(option, default = "100")]
    pub quiet_room: usize,
    /// most rooms one connection may be in (default 50)
    #[argh(option, default = "50")]
    pub max_joined: usize,
    /// most rooms on the server (default 1000)
    #[argh(option, default = "1000")]
    pub max_rooms: usize,
    /// most rooms one account may own with /create (default 10)
    #[argh(option, default = "10")]
    pub max_owned: usize,
    /// most rooms one address may have made (a new #name, or /join new) that still exist (default 50)
    #[argh(option, default = "50")]
    pub max_rooms_per_ip: usize,
    /// nicks one address may register per hour; 0 no limit (default 5)
    #[argh(option, default = "5")]
    pub register_per_hour: u32,
    /// password hashes queued or running at once; more get 'busy, try again' (default 32)
    #[argh(option, default = "32")]
    pub max_hash_jobs: usize,
    /// direct messages kept per conversation between registered users, and waiting per offline user (default 200)
    #[argh(option, default = "200")]
    pub dm_history: usize,
    /// directory for the journal; $STATE_DIRECTORY wins when set (default ./chatd-state)
    #[argh(option)]
    pub state_dir: Option<String>,
    /// keep nothing on disk: history, accounts and rooms last as long as the process
    #[argh(switch)]
    pub ephemeral: bool,
    /// when the journal is synced: always (before any output of the same loop iteration), batch (at most once a second) or never (default always)
    #[argh(option, default = "String::from(\"always\")")]
    pub fsync: String,
    /// PBKDF2 iterations for new password hashes; lowering it weakens stored passwords (default 600000)
    #[argh(option, default = "600_000")]
    pub hash_iterations: u32,
    /// serve /health, /stats, /metrics and a live dashboard over HTTP on ADDR:PORT (default off)
    #[argh(option)]
    pub status: Option<String>,
    /// do not serve the browser client: chat ports speak lines only and greet at once
    #[argh(switch)]
    pub no_web: bool,
    /// also serve the browser client (HTTP and WebSocket only) on ADDR:PORT, e.g. behind a reverse proxy (repeatable, default off)
    #[argh(option)]
    pub web_listen: Vec<String>,
    /// an origin besides the page's own that may open the WebSocket, like https://chat.example.org, or * for any (repeatable)
    #[argh(option)]
    pub web_origin: Vec<String>,
    /// the address of a reverse proxy whose X-Forwarded-For is believed (repeatable; default none)
    #[argh(option)]
    pub trusted_proxy: Vec<String>,
    /// seconds of silence after which a browser is pinged; silent twice as long, it is disconnected (default 30)
    #[argh(option, default = "30")]
    pub web_ping: u64,
    /// also serve the chat over TLS on ADDR:PORT, with --tls-cert and --tls-key (repeatable, default off)
    #[argh(option)]
    pub tls_listen: Vec<String>,
    /// PEM certificate chain for --tls-listen, leaf first
    #[argh(option)]
    pub tls_cert: Option<String>,
    /// PEM private key for --tls-listen (PKCS#8, PKCS#1 or SEC1)
    #[argh(option)]
    pub tls_key: Option<String>,
    /// seconds a TLS handshake may take before the connection is cut off (default 10)
    #[argh(option, default = "10")]
    pub tls_handshake_timeout: u64,
    /// TLS handshakes in progress at once; more are refused (default 256)
    #[argh(option, default = "256")]
    pub max_handshakes: usize,
    /// join a cluster through this NATS server, nats://HOST:PORT (repeatable; default: no cluster)
    #[argh(option)]
    pub cluster: Vec<String>,
    /// this server's name in the cluster, unique there (default: the host name)
    #[argh(option)]
    pub node: Option<String>,
    /// copies JetStream keeps of the cluster's streams and buckets (default: 3 if several --cluster servers are given, else 1)
    #[argh(option)]
    pub cluster_replicas: Option<usize>,
    /// seconds without a heartbeat before a node's people are dropped from presence (default 5)
    #[argh(option, default = "5")]
    pub node_timeout: u64,
    /// append logs to this file instead of stderr; SIGHUP reopens it (default stderr)
    #[argh(option)]
    pub log_file: Option<String>,
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
}

impl Flags {
    /// Parses flags as the binary would be given them (without the program
    /// name); the error is argh's text (usage or `--help`).
    pub fn parse(args: &[&str]) -> Result<Flags, String> {
        Flags::from_args(&["chatd"], args).map_err(|e| e.output)
    }

    /// The raw settings; `state_env` is `$STATE_DIRECTORY`, if set.
    pub fn settings(self, state_env: Option<String>) -> Settings {
        Settings {
            listen: self.listen,
            name: self.name,
            default_rooms: self.default_room,
            max_line: self.max_line,
            max_image: self.max_image,
            max_conns: self.max_conns,
            max_per_ip: self.max_per_ip,
            max_queue: self.max_queue,
            socket_buffer: self.socket_buffer,
            max_pending: self.max_pending,
            conn_rate: self.conn_rate,
            conn_burst: self.conn_burst,
            rate: self.rate,
            burst: self.burst,
            paste_lines: self.paste_lines,
            admins: self.admin,
            max_sessions: self.max_sessions,
            search_budget: self.search_budget,
            shutdown_message: self.shutdown_message,
            name_timeout: self.name_timeout,
            idle_timeout: self.idle_timeout,
            history: self.history,
            history_on_join: self.history_on_join,
            history_bytes: self.history_bytes,
            history_total: self.history_total,
            history_envelope: self.history_envelope,
            quiet_room: self.quiet_room,
            max_joined: self.max_joined,
            max_rooms: self.max_rooms,
            max_owned: self.max_owned,
            max_rooms_per_ip: self.max_rooms_per_ip,
            register_per_hour: self.register_per_hour,
            max_hash_jobs: self.max_hash_jobs,
            dm_history: self.dm_history,
            hash_iterations: self.hash_iterations,
            state_dir: self.state_dir,
            state_env,
            ephemeral: self.ephemeral,
            fsync: self.fsync,
            status: self.status,
            tls_listen: self.tls_listen,
            no_web: self.no_web,
            web_listen: self.web_listen,
            web_origin: self.web_origin,
            trusted_proxy: self.trusted_proxy,
            web_ping: self.web_ping,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            tls_handshake_timeout: self.tls_handshake_timeout,
            max_handshakes: self.max_handshakes,
            cluster: self.cluster,
            node: self.node,
            cluster_replicas: self.cluster_replicas,
            node_timeout: self.node_timeout,
        }
    }
}

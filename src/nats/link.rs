//! The actor that owns the NATS connection: it takes the loop's requests,
//! publishes, follows rooms, claims nicks, watches the shared state, keeps
//! work for NATS during an outage, and tells the loop what happened. It runs
//! on the bridge's thread only; nothing here touches the loop's state.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, kv, stream};
use async_nats::{HeaderMap, Message};
use futures_util::StreamExt;
use log::{debug, info, warn};
use tokio::sync::mpsc::{Receiver, UnboundedSender, unbounded_channel};
use tokio::task::AbortHandle;

use super::reorder::Reorder;
use super::wire::{
    decode_presence, decode_roster, dm_parties, encode_presence, encode_roster, room_subject,
    room_token, shared_key,
};
use super::{ClusterConfig, Out};
use crate::core::{Claim, FromCluster, Presence, ToCluster};
use crate::proto::fold;
use crate::record::Record;

const ROOMS: &str = "CHATD_ROOMS";
const INBOX: &str = "CHATD_INBOX";
const NICKS: &str = "chatd_nicks";
const STATE: &str = "chatd_state";
/// How often the bridge looks around (outage debounce, heartbeats).
const TICK: Duration = Duration::from_millis(250);
/// Ticks per heartbeat.
const BEAT_TICKS: u32 = 4;
/// Ticks between checks of every followed room's last line (30 s).
const VERIFY_TICKS: u32 = 120;
/// After a reconnection, followed rooms are checked every second this long.
const SETTLE: Duration = Duration::from_secs(10);
/// A disconnection shorter than this (a switch to another NATS server) is
/// not reported to users.
const DOWN_AFTER: Duration = Duration::from_millis(1500);
/// A line missing this long is fetched from the stream (it was lost, not
/// late: a reconnection).
const GAP_WAIT: Duration = Duration::from_millis(500);
/// Early lines kept per room while one is missing, before fetching anyway.
const MAX_EARLY: usize = 10_000;
/// Work kept for NATS during an outage, at most (each a line of at most
/// --max-line bytes, or a state record).
const MAX_OUTBOX: usize = 100_000;
/// Any single NATS operation the bridge waits for.
const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// Things that happen inside the bridge, funnelled into its one loop.
enum Inner {
    Event(async_nats::Event),
    Live {
        room: String,
        msg: Message,
    },
    Dm(Message),
    Presence(Message),
    RosterAsked(Message),
    Roster {
        node: String,
        people: Vec<(String, Vec<String>)>,
    },
    State(kv::Entry),
    /// A publish that failed: try again later.
    Retry(Pending),
}

/// Work that waits for the cluster.
#[derive(Debug, Clone)]
enum Pending {
    /// `shown`: the core showed it already (the cluster was down).
    Post {
        room: String,
        line: String,
        id: u64,
        shown: bool,
    },
    Store {
        to: String,
        line: String,
    },
    State(Record),
}

struct Follow {
    order: Reorder<(String, Option<u64>)>,
    loaded: bool,
    task: AbortHandle,
}

struct Peer {
    seen: Instant,
    incarnation: String,
}

struct Link {
    cfg: ClusterConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    out: Out,
    inner: UnboundedSender<Inner>,
    connected: bool,
    /// Since when disconnected, until reported as down.
    lost_at: Option<Instant>,
    reported_up: bool,
    /// Streams and buckets made on this connection.
    ready: bool,
    subscribed: bool,
    started: Instant,
    incarnation: String,
    rooms_stream: Option<stream::Stream>,
    /// When the rooms stream was made, to notice it made anew.
    rooms_created: Option<i128>,
    inbox_stream: Option<stream::Stream>,
    nicks: Option<kv::Store>,
    state: Option<kv::Store>,
    watch: Option<AbortHandle>,
    follows: HashMap<String, Follow>,
    /// This node's people: folded nick -> (nick, room keys).
    local: HashMap<String, (String, Vec<String>)>,
    /// Nicks this node holds in the bucket for people here.
    held: HashSet<String>,
    /// Nicks granted here during an outage, to claim on return.
    provisional: HashSet<String>,
    /// Nicks given up during an outage, to release on return.
    to_release: HashSet<String>,
    /// Inboxes to fetch on return.
    to_take: HashSet<String>,
    outbox: VecDeque<Pending>,
    /// Work dropped from a full outbox.
    outbox_dropped: u64,
    /// Until when followed rooms are checked every second.
    verify_until: Option<Instant>,
    /// Other nodes by name, kept by the liveness task (see `watch_peers`).
    peers: Peers,
    ticks: u32,
}

pub(super) async fn run(cfg: ClusterConfig, mut cmds: Receiver<ToCluster>, out: Out) {
    let (inner_tx, mut inner_rx) = unbounded_channel::<Inner>();
    let events = inner_tx.clone();
    let mut servers = Vec::new();
    for s in &cfg.servers {
        match s.parse::<async_nats::ServerAddr>() {
            Ok(a) => servers.push(a),
            Err(e) => warn!("cluster: ignoring server {s}: {e}"),
        }
    }
    let client = async_nats::ConnectOptions::new()
        .name(format!("chatd {}", cfg.node))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|n| Duration::from_millis((100 * n as u64).min(1000)))
        .connection_timeout(Duration::from_secs(2))
        .ping_interval(Duration::from_secs(2))
        .request_timeout(Some(OP_TIMEOUT))
        .event_callback(move |ev| {
            let tx = events.clone();
            async move {
                let _ = tx.send(Inner::Event(ev));
            }
        })
        .connect(servers)
        .await;
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            warn!("cluster: cannot start the NATS client: {e}");
            return;
        }
    };
    // Tells this life of the node from its earlier ones; if the generator
    // failed, the clock does (`Peer` compares incarnations, nothing more).
    let mut buf = [0u8; 8];
    if crate::random::fill(&mut buf).is_err() {
        buf = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()) as u64)
            .to_le_bytes();
    }
    let mut link = Link {
        js: jetstream::new(client.clone()),
        client,
        out,
        inner: inner_tx,
        connected: false,
        lost_at: Some(Instant::now()),
        reported_up: false,
        ready: false,
        subscribed: false,
        started: Instant::now(),
        incarnation: format!("{:016x}", u64::from_le_bytes(buf)),
        rooms_stream: None,
        rooms_created: None,
        inbox_stream: None,
        nicks: None,
        state: None,
        watch: None,
        follows: HashMap::new(),
        local: HashMap::new(),
        held: HashSet::new(),
        provisional: HashSet::new(),
        to_release: HashSet::new(),
        to_take: HashSet::new(),
        outbox: VecDeque::new(),
        outbox_dropped: 0,
        verify_until: None,
        peers: Peers::default(),
        ticks: 0,
        cfg,
    };
    // The heartbeat has a task of its own: a loop busy waiting for
    // JetStream must not make this node look dead to the others.
    {
        let client = link.client.clone();
        let subject = format!("chatd.hb.{}", link.cfg.node);
        let incarnation = link.incarnation.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK * BEAT_TICKS);
            loop {
                every.tick().await;
                if client.connection_state() == async_nats::connection::State::Connected {
                    let _ = client
                        .publish(subject.clone(), incarnation.clone().into())
                        .await;
                }
            }
        });
    }
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            req = cmds.recv() => match req {
                Some(r) => link.request(r).await,
                None => break,
            },
            Some(i) = inner_rx.recv() => link.inner(i).await,
            _ = tick.tick() => link.tick().await,
        }
    }
    link.shutdown().await;
}

impl Link {
    fn usable(&self) -> bool {
        self.connected && self.ready
    }

    async fn shutdown(&mut self) {
        // People here are leaving with the node: free their nicks now
        // rather than when the others notice the silence.
        if self.usable() {
            for key in std::mem::take(&mut self.held) {
                self.release_now(&key).await;
            }
            let _ = self.client.flush().await;
        }
    }

    async fn request(&mut self, req: ToCluster) {
        match req {
            ToCluster::Post {
                room,
                line,
                id,
                local,
            } => {
                self.publish(Pending::Post {
                    room,
                    line,
                    id,
                    shown: local,
                })
                .await
            }
            ToCluster::Store { to, line } => self.publish(Pending::Store { to, line }).await,
            ToCluster::State(rec) => self.publish(Pending::State(rec)).await,
            ToCluster::Follow(room) => self.follow(room).await,
            ToCluster::Unfollow(room) => {
                if let Some(f) = self.follows.remove(&room) {
                    f.task.abort();
                }
            }
            ToCluster::Claim { id, nick } => {
                let outcome = self.claim(&nick).await;
                self.out.send(FromCluster::Claimed { id, outcome });
            }
            ToCluster::Release(nick) => {
                let key = fold(&nick);
                self.provisional.remove(&key);
                if self.held.remove(&key) {
                    if self.usable() {
                        self.release_now(&key).await;
                    } else {
                        self.to_release.insert(key);
                    }
                }
            }
            ToCluster::Presence(p) => self.local_presence(p).await,
            ToCluster::Dm {
                node,
                to,
                line,
                store,
            } => self.dm(&node, to, line, store),
            ToCluster::TakeInbox(nick) => {
                if self.usable() {
                    self.take_inbox(&nick).await;
                } else {
                    self.to_take.insert(nick);
                }
            }
        }
    }

    async fn inner(&mut self, i: Inner) {
        match i {
            Inner::Event(ev) => self.event(ev).await,
            Inner::Live { room, msg } => self.live(&room, msg).await,
            Inner::Dm(msg) => {
                // One subscription for the node, not one per person: a
                // subscription costs its channel's first block (~6 KB).
                let nick = msg.subject.as_str().rsplit('.').next().unwrap_or_default();
                let here = self.local.contains_key(nick);
                if let Some(reply) = msg.reply.clone() {
                    let answer = if here { "ok" } else { "gone" };
                    let _ = self.client.publish(reply, answer.into()).await;
                }
                if here && let Ok(line) = std::str::from_utf8(&msg.payload) {
                    self.out.send(FromCluster::Dm {
                        line: line.to_string(),
                    });
                }
            }
            Inner::Presence(msg) => {
                let node = msg.subject.as_str().rsplit('.').next().unwrap_or_default();
                if node == self.cfg.node {
                    return;
                }
                if let Some(p) = std::str::from_utf8(&msg.payload)
                    .ok()
                    .and_then(decode_presence)
                {
                    self.out.send(FromCluster::Presence {
                        node: node.to_string(),
                        presence: p,
                    });
                }
            }
            Inner::RosterAsked(msg) => {
                if let Some(reply) = msg.reply.clone() {
                    let body = encode_roster(self.local.values());
                    let _ = self.client.publish(reply, body.into()).await;
                }
            }
            Inner::Roster { node, people } => {
                if self.peers.lock().is_ok_and(|p| p.contains_key(&node)) {
                    self.out.send(FromCluster::Roster { node, people });
                }
            }
            Inner::State(entry) => self.state_entry(entry),
            Inner::Retry(p) => self.hold(p),
        }
    }

    async fn event(&mut self, ev: async_nats::Event) {
        match ev {
            async_nats::Event::Connected => {
                info!("cluster: connected to NATS");
                self.connected = true;
                self.lost_at = None;
                self.come_up().await;
            }
            async_nats::Event::Disconnected => {
                warn!("cluster: lost the connection to NATS");
                self.connected = false;
                self.lost_at = Some(Instant::now());
            }
            other => debug!("cluster: {other}"),
        }
    }

    async fn tick(&mut self) {
        self.ticks = self.ticks.wrapping_add(1);
        if let Some(at) = self.lost_at
            && self.reported_up
            && at.elapsed() >= DOWN_AFTER
        {
            self.reported_up = false;
            // Nobody can be heard now; whoever still beats is asked again.
            if let Ok(mut p) = self.peers.lock() {
                p.clear();
            }
            self.out.send(FromCluster::Down);
            for p in self.outbox.iter_mut() {
                show_unsent(&self.out, p);
            }
        }
        if self.connected && !self.ready {
            self.come_up().await;
        }
        if !self.usable() {
            return;
        }
        self.fill_gaps().await;
        // A line republished while this node's subscriptions were being
        // restored reaches nobody here, and no later line may come to show
        // the gap: after a reconnection look at each room's last line every
        // second for a while, and every half minute anyway.
        let settling = self.verify_until.is_some_and(|t| Instant::now() < t);
        if settling && self.ticks.is_multiple_of(BEAT_TICKS) && self.streams_gone().await {
            // NATS came back without its store: make everything again.
            warn!("cluster: the rooms stream is gone or new; setting up again");
            self.ready = false;
            return;
        }
        if (settling && self.ticks.is_multiple_of(BEAT_TICKS))
            || self.ticks.is_multiple_of(VERIFY_TICKS)
        {
            let rooms: Vec<String> = self.follows.keys().cloned().collect();
            for room in rooms {
                self.catch_up(&room).await;
            }
        }
        self.flush_outbox().await;
    }

    /// Sets the cluster up (streams, buckets, subscriptions) and catches up.
    async fn come_up(&mut self) {
        if !self.ready {
            match tokio::time::timeout(OP_TIMEOUT * 2, self.setup()).await {
                Ok(Ok(())) => self.ready = true,
                Ok(Err(e)) => {
                    warn!(
                        "cluster: setting up JetStream failed: {e}; retrying (a NATS cluster smaller than --cluster-replicas {} refuses)",
                        self.cfg.replicas
                    );
                    return;
                }
                Err(_) => {
                    warn!("cluster: setting up JetStream timed out; retrying");
                    return;
                }
            }
        }
        self.watch_state().await;
        for key in std::mem::take(&mut self.to_release) {
            self.release_now(&key).await;
        }
        for nick in std::mem::take(&mut self.provisional) {
            let key = fold(&nick);
            if self.local.contains_key(&key) && self.claim(&nick).await == Claim::Lost {
                self.out.send(FromCluster::NickLost(nick));
            }
        }
        // What people here said during the outage goes out first.
        self.flush_outbox().await;
        let rooms: Vec<String> = self.follows.keys().cloned().collect();
        for room in rooms {
            self.catch_up(&room).await;
        }
        self.verify_until = Some(Instant::now() + SETTLE);
        for nick in std::mem::take(&mut self.to_take) {
            self.take_inbox(&nick).await;
        }
        self.flush_outbox().await;
        if !self.reported_up {
            self.reported_up = true;
            self.out.send(FromCluster::Up);
        }
        // Everyone re-learns who is here.
        for (nick, rooms) in self.local.values().cloned().collect::<Vec<_>>() {
            self.announce(&Presence::Online { nick, rooms }).await;
        }
    }

    async fn setup(&mut self) -> Result<(), async_nats::Error> {
        let replicas = self.cfg.replicas.max(1);
        let rooms = self
            .js
            .get_or_create_stream(stream::Config {
                name: ROOMS.into(),
                subjects: vec!["chatd.room.>".into()],
                max_messages_per_subject: self.cfg.history_keep.max(1),
                num_replicas: replicas,
                storage: stream::StorageType::File,
                republish: Some(stream::Republish {
                    source: "chatd.room.>".into(),
                    destination: "chatd.live.>".into(),
                    headers_only: false,
                }),
                ..Default::default()
            })
            .await?;
        let inbox = self
            .js
            .get_or_create_stream(stream::Config {
                name: INBOX.into(),
                subjects: vec!["chatd.inbox.>".into()],
                max_messages_per_subject: self.cfg.dm_keep.max(1),
                num_replicas: replicas,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?;
        let (nicks, claims) = self.bucket(NICKS, replicas).await?;
        if claims == 0 && !self.held.is_empty() {
            // NATS came back without its store: claim again what people
            // here hold, before anyone elsewhere can take it.
            warn!("cluster: the nick bucket is empty; claiming this node's nicks again");
            for key in std::mem::take(&mut self.held) {
                if let Some((nick, _)) = self.local.get(&key) {
                    self.provisional.insert(nick.clone());
                }
            }
        }
        self.nicks = Some(nicks);
        self.state = Some(self.bucket(STATE, replicas).await?.0);
        // A rooms stream made anew (NATS lost its store, or someone deleted
        // it) numbers from 1 again: what was shown says nothing about it.
        let created = rooms.cached_info().created.unix_timestamp_nanos();
        if self.rooms_created.is_some_and(|c| c != created) {
            warn!("cluster: the rooms stream was made anew; following its rooms from its start");
            for f in self.follows.values_mut() {
                f.order = Reorder::default();
            }
        }
        self.rooms_created = Some(created);
        self.rooms_stream = Some(rooms);
        self.inbox_stream = Some(inbox);
        // Subscriptions outlive reconnections (the client renews them).
        if !self.subscribed {
            self.subscribe("chatd.presence.*".into(), Inner::Presence)
                .await?;
            self.watch_peers().await?;
            let roster = format!("chatd.roster.{}", self.cfg.node);
            self.subscribe(roster, Inner::RosterAsked).await?;
            let dms = format!("chatd.dm.{}.*", self.cfg.node);
            self.subscribe(dms, Inner::Dm).await?;
            self.subscribed = true;
        }
        info!("cluster: JetStream streams and buckets ready");
        Ok(())
    }

    /// True if the rooms stream does not exist, or is not the one set up
    /// (made anew, by another node, since): everything is set up again.
    async fn streams_gone(&self) -> bool {
        match tokio::time::timeout(OP_TIMEOUT, self.js.get_stream(ROOMS)).await {
            Ok(Err(e)) => matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ),
            Ok(Ok(s)) => self.rooms_created != Some(s.cached_info().created.unix_timestamp_nanos()),
            Err(_) => false,
        }
    }

    /// A key-value bucket, made the way NATS clients make them. Made here
    /// because async-nats's own call asks the server for account details
    /// in a newer form than nats-server 2.9 gives.
    async fn bucket(
        &self,
        name: &str,
        replicas: usize,
    ) -> Result<(kv::Store, u64), async_nats::Error> {
        let s = self
            .js
            .get_or_create_stream(stream::Config {
                name: format!("KV_{name}"),
                subjects: vec![format!("$KV.{name}.>")],
                max_messages_per_subject: 1,
                num_replicas: replicas,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?;
        let entries = s.cached_info().state.messages;
        Ok((self.js.get_key_value(name).await?, entries))
    }

    async fn subscribe(
        &self,
        subject: String,
        wrap: fn(Message) -> Inner,
    ) -> Result<AbortHandle, async_nats::Error> {
        let mut sub = self.client.subscribe(subject).await?;
        let tx = self.inner.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if tx.send(wrap(m)).is_err() {
                    break;
                }
            }
        });
        Ok(task.abort_handle())
    }

    /// (Re)starts the watch of the state bucket, from its current contents.
    async fn watch_state(&mut self) {
        let Some(state) = self.state.clone() else {
            return;
        };
        if let Some(w) = self.watch.take() {
            w.abort();
        }
        let watch = match tokio::time::timeout(OP_TIMEOUT, state.watch_with_history(">")).await {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => {
                warn!("cluster: cannot watch the state bucket: {e}");
                return;
            }
            Err(_) => {
                warn!("cluster: watching the state bucket timed out");
                return;
            }
        };
        let tx = self.inner.clone();
        let mut watch = watch;
        let task = tokio::spawn(async move {
            while let Some(entry) = watch.next().await {
                match entry {
                    Ok(e) => {
                        if tx.send(Inner::State(e)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        warn!("cluster: state watch: {e}");
                        break;
                    }
                }
            }
        });
        self.watch = Some(task.abort_handle());
    }

    fn state_entry(&mut self, entry: kv::Entry) {
        if entry.operation != kv::Operation::Put {
            return;
        }
        let v = &entry.value;
        let Some(nl) = v.iter().position(|&b| b == b'\n') else {
            return;
        };
        if &v[..nl] == self.cfg.node.as_bytes() {
            return;
        }
        match Record::decode(&v[nl + 1..]) {
            Ok(rec) if shared_key(&rec).is_some() => self.out.send(FromCluster::State(rec)),
            Ok(_) => {}
            Err(e) => warn!("cluster: bad state record {}: {e}", entry.key),
        }
    }

    async fn publish(&mut self, p: Pending) {
        if !self.usable() {
            self.hold(p);
            return;
        }
        self.send_pending(p).await;
    }

    /// Keeps work for when the cluster returns. While the outage is known,
    /// a room line is handed back to be shown here at once.
    fn hold(&mut self, mut p: Pending) {
        if !self.reported_up {
            show_unsent(&self.out, &mut p);
        }
        if self.outbox.len() >= MAX_OUTBOX {
            // A long outage under heavy traffic: the oldest line stays in
            // this node's journal and history, the other nodes miss it.
            if self.outbox.pop_front().is_some() && self.outbox_dropped == 0 {
                warn!(
                    "cluster: {MAX_OUTBOX} lines wait for NATS; the oldest are no longer kept for it"
                );
            }
            self.outbox_dropped += 1;
        }
        self.outbox.push_back(p);
    }

    async fn flush_outbox(&mut self) {
        while self.usable() {
            let Some(p) = self.outbox.pop_front() else {
                break;
            };
            self.send_pending(p).await;
        }
    }

    /// Publishes without waiting for the acknowledgement on this task: a
    /// spawned task waits, and puts the work back in the outbox on failure.
    async fn send_pending(&mut self, p: Pending) {
        let (subject, headers, payload) = match &p {
            Pending::Post { room, line, id, .. } => {
                let mut h = HeaderMap::new();
                h.insert("Chatd-Node", self.cfg.node.as_str());
                h.insert("Chatd-Id", id.to_string().as_str());
                // JetStream drops a retried publish it already stored.
                let msg_id = format!("{}-{}-{id}", self.cfg.node, self.incarnation);
                h.insert("Nats-Msg-Id", msg_id.as_str());
                (room_subject(room), h, line.clone().into_bytes())
            }
            Pending::Store { to, line } => (
                format!("chatd.inbox.{}", fold(to)),
                HeaderMap::new(),
                line.clone().into_bytes(),
            ),
            Pending::State(rec) => {
                let Some(key) = shared_key(rec) else {
                    return;
                };
                if let Record::RoomGone { room } = rec {
                    self.purge_room(&fold(room)).await;
                }
                let Some(state) = self.state.clone() else {
                    return;
                };
                let mut v = self.cfg.node.clone().into_bytes();
                v.push(b'\n');
                v.extend(rec.encode());
                let tx = self.inner.clone();
                tokio::spawn(async move {
                    if tokio::time::timeout(OP_TIMEOUT, state.put(key, v.into()))
                        .await
                        .map_or(true, |r| r.is_err())
                    {
                        let _ = tx.send(Inner::Retry(p));
                    }
                });
                return;
            }
        };
        let ack = self
            .js
            .publish_with_headers(subject, headers, payload.into())
            .await;
        let tx = self.inner.clone();
        match ack {
            Ok(ack) => {
                tokio::spawn(async move {
                    if tokio::time::timeout(OP_TIMEOUT * 2, ack)
                        .await
                        .map_or(true, |r| r.is_err())
                    {
                        let _ = tx.send(Inner::Retry(p));
                    }
                });
            }
            Err(_) => self.hold(p),
        }
    }

    /// A deleted room's history goes with it, in the stream too.
    async fn purge_room(&self, key: &str) {
        let Some(s) = self.rooms_stream.clone() else {
            return;
        };
        let purge = s.purge().filter(room_subject(key));
        if tokio::time::timeout(OP_TIMEOUT, purge.into_future())
            .await
            .map_or(true, |r| r.is_err())
        {
            warn!("cluster: could not purge the history of {key}");
        }
    }

    async fn follow(&mut self, room: String) {
        if self.follows.contains_key(&room) || room.starts_with('~') {
            return;
        }
        let subject = format!("chatd.live.{}", room_token(&room));
        let mut sub = match self.client.subscribe(subject).await {
            Ok(s) => s,
            Err(e) => {
                warn!("cluster: cannot follow {room}: {e}");
                return;
            }
        };
        let tx = self.inner.clone();
        let r = room.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if tx
                    .send(Inner::Live {
                        room: r.clone(),
                        msg,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        self.follows.insert(
            room.clone(),
            Follow {
                order: Reorder::default(),
                loaded: false,
                task: task.abort_handle(),
            },
        );
        if self.usable() {
            self.catch_up(&room).await;
        }
    }

    /// Loads a room's history if it was never loaded, else fetches what was
    /// missed since the last line seen.
    async fn catch_up(&mut self, room: &str) {
        let Some(f) = self.follows.get(room) else {
            return;
        };
        let (loaded, from) = (f.loaded, f.order.last + 1);
        let fetched = self.fetch(ROOMS, room_subject(room), from).await;
        let Some(lines) = fetched else {
            if !loaded {
                // Shown as empty rather than never: the lines will come live.
                warn!("cluster: could not load the history of {room}");
            }
            return;
        };
        let Some(f) = self.follows.get_mut(room) else {
            return;
        };
        let upto = lines.last().map_or(f.order.last, |l| l.0);
        let after = f.order.skip_to(upto, Instant::now());
        if !loaded {
            f.loaded = true;
            let lines = lines.into_iter().map(|(_, l, _)| l).collect();
            self.out.send(FromCluster::History {
                room: room.to_string(),
                lines,
            });
        } else {
            for (_, line, id) in lines {
                self.out.send(FromCluster::Posted {
                    room: room.to_string(),
                    line,
                    id,
                });
            }
        }
        self.show(room, after);
    }

    fn show(&self, room: &str, lines: Vec<(u64, (String, Option<u64>))>) {
        for (_, (line, id)) in lines {
            self.out.send(FromCluster::Posted {
                room: room.to_string(),
                line,
                id,
            });
        }
    }

    /// Rooms where a line has been missing too long: fetch from the stream.
    async fn fill_gaps(&mut self) {
        let now = Instant::now();
        let stale: Vec<String> = self
            .follows
            .iter()
            .filter(|(_, f)| f.order.stuck(GAP_WAIT, MAX_EARLY, now))
            .map(|(k, _)| k.clone())
            .collect();
        for room in stale {
            self.catch_up(&room).await;
        }
    }

    /// The stored messages of a subject from sequence `from` on: (sequence,
    /// text, our post id). `None` if the cluster did not answer.
    async fn fetch(
        &self,
        stream_name: &str,
        subject: String,
        from: u64,
    ) -> Option<Vec<(u64, String, Option<u64>)>> {
        let stream = match stream_name {
            ROOMS => self.rooms_stream.clone()?,
            _ => self.inbox_stream.clone()?,
        };
        let work = async {
            let last = match stream.get_last_raw_message_by_subject(&subject).await {
                Ok(m) => m.sequence,
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                    return Some(Vec::new());
                }
                Err(e) => {
                    warn!("cluster: reading {subject}: {e}");
                    return None;
                }
            };
            if last < from {
                return Some(Vec::new());
            }
            let deliver_policy = if from <= 1 {
                consumer::DeliverPolicy::All
            } else {
                consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                }
            };
            let cons = stream
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subject: subject.clone(),
                    deliver_policy,
                    ..Default::default()
                })
                .await
                .ok()?;
            let mut msgs = cons.messages().await.ok()?;
            let mut out = Vec::new();
            while let Some(Ok(m)) = msgs.next().await {
                let Ok(info) = m.info() else { break };
                let seq = info.stream_sequence;
                let pending = info.pending;
                let text = String::from_utf8_lossy(&m.payload).into_owned();
                out.push((seq, text, self.our_id(m.headers.as_ref())));
                if seq >= last || pending == 0 {
                    break;
                }
            }
            Some(out)
        };
        tokio::time::timeout(OP_TIMEOUT * 2, work)
            .await
            .ok()
            .flatten()
    }

    fn our_id(&self, h: Option<&HeaderMap>) -> Option<u64> {
        let h = h?;
        if h.get("Chatd-Node")?.as_str() != self.cfg.node {
            return None;
        }
        h.get("Chatd-Id")?.as_str().parse().ok()
    }

    /// A republished room line: in order, without gaps, once.
    async fn live(&mut self, room: &str, msg: Message) {
        let Some(f) = self.follows.get(room) else {
            return;
        };
        if !f.loaded {
            return;
        }
        let header =
            |name: &str| -> Option<u64> { msg.headers.as_ref()?.get(name)?.as_str().parse().ok() };
        let (Some(seq), Some(prev)) = (header("Nats-Sequence"), header("Nats-Last-Sequence"))
        else {
            return;
        };
        let id = self.our_id(msg.headers.as_ref());
        let line = String::from_utf8_lossy(&msg.payload).into_owned();
        let now = Instant::now();
        let Some(f) = self.follows.get_mut(room) else {
            return;
        };
        let ready = f.order.push(prev, seq, (line, id), now);
        let stuck = f.order.stuck(GAP_WAIT, MAX_EARLY, now);
        self.show(room, ready);
        if stuck {
            self.catch_up(room).await;
        }
    }

    /// Create-if-absent in the nick bucket. A claim held by a node that is
    /// gone, or by this node's previous life, is taken over with
    /// compare-and-set, so of two racing claims exactly one wins.
    async fn claim(&mut self, nick: &str) -> Claim {
        let key = fold(nick);
        let Some(kv) = self.nicks.clone().filter(|_| self.usable()) else {
            self.provisional.insert(nick.to_string());
            return Claim::Unreachable;
        };
        let value = format!("{} {}", self.cfg.node, self.incarnation);
        let outcome = tokio::time::timeout(OP_TIMEOUT, async {
            match kv.create(&key, value.clone().into()).await {
                Ok(_) => return Claim::Won,
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(_) => return Claim::Unreachable,
            }
            let Ok(Some(entry)) = kv.entry(&key).await else {
                return Claim::Unreachable;
            };
            let owner = String::from_utf8_lossy(&entry.value).into_owned();
            let mut parts = owner.split(' ');
            let (node, inc) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let stale = if node == self.cfg.node {
                inc != self.incarnation && !self.held.contains(&key)
            } else {
                let peer = self
                    .peers
                    .lock()
                    .ok()
                    .and_then(|p| p.get(node).map(|p| p.incarnation.clone()));
                match peer {
                    // That node restarted since: its people came back, or
                    // will claim again.
                    Some(i) => i != inc,
                    // Unheard of since we have been listening long enough
                    // to have heard it: gone.
                    None => self.started.elapsed() > self.cfg.expire,
                }
            };
            if !stale {
                return Claim::Lost;
            }
            match kv.update(&key, value.into(), entry.revision).await {
                Ok(_) => Claim::Won,
                Err(_) => Claim::Lost,
            }
        })
        .await
        .unwrap_or(Claim::Unreachable);
        match outcome {
            Claim::Won => {
                self.held.insert(key);
            }
            Claim::Unreachable => {
                self.provisional.insert(nick.to_string());
            }
            Claim::Lost | Claim::Busy => {}
        }
        outcome
    }

    async fn release_now(&self, key: &str) {
        let Some(kv) = self.nicks.clone() else {
            return;
        };
        let work = async {
            if let Ok(Some(e)) = kv.entry(key).await
                && String::from_utf8_lossy(&e.value).starts_with(&format!("{} ", self.cfg.node))
            {
                let _ = kv.delete_expect_revision(key, Some(e.revision)).await;
            }
        };
        let _ = tokio::time::timeout(OP_TIMEOUT, work).await;
    }

    async fn local_presence(&mut self, p: Presence) {
        match &p {
            Presence::Online { nick, rooms } => {
                self.local.insert(fold(nick), (nick.clone(), rooms.clone()));
            }
            Presence::Offline { nick } => {
                self.local.remove(&fold(nick));
            }
            Presence::Join { nick, room } => {
                if let Some((_, rooms)) = self.local.get_mut(&fold(nick))
                    && !rooms.contains(room)
                {
                    rooms.push(room.clone());
                }
            }
            Presence::Part { nick, room } => {
                if let Some((_, rooms)) = self.local.get_mut(&fold(nick)) {
                    rooms.retain(|r| r != room);
                }
            }
            Presence::Rename { old, new } => {
                if let Some((_, rooms)) = self.local.remove(&fold(old)) {
                    self.local.insert(fold(new), (new.clone(), rooms));
                }
            }
        }
        if self.usable() {
            self.announce(&p).await;
        }
    }

    async fn announce(&self, p: &Presence) {
        let subject = format!("chatd.presence.{}", self.cfg.node);
        let _ = self
            .client
            .publish(subject, encode_presence(p).into())
            .await;
    }

    /// Heartbeats and expiry on a task of their own: the main loop may wait
    /// seconds for JetStream, and whether a node is alive must not wait
    /// with it.
    async fn watch_peers(&self) -> Result<(), async_nats::Error> {
        let mut sub = self.client.subscribe("chatd.hb.*").await?;
        let (peers, client, out, tx) = (
            self.peers.clone(),
            self.client.clone(),
            self.out.clone(),
            self.inner.clone(),
        );
        let (me, expire) = (self.cfg.node.clone(), self.cfg.expire);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK * BEAT_TICKS);
            loop {
                tokio::select! {
                    m = sub.next() => {
                        let Some(m) = m else { break };
                        beat(&peers, &me, &m, &client, &tx);
                    }
                    _ = every.tick() => {
                        // Disconnected, nobody can be heard: nobody expires.
                        if client.connection_state() == async_nats::connection::State::Connected {
                            expire_peers(&peers, expire, &out);
                        }
                    }
                }
            }
        });
        Ok(())
    }

    fn dm(&mut self, node: &str, to: String, line: String, store: bool) {
        if !self.usable() {
            if store {
                self.outbox.push_back(Pending::Store { to, line });
            } else {
                self.fail_dm(&line, &to);
            }
            return;
        }
        let client = self.client.clone();
        let tx = self.inner.clone();
        let out_line = line.clone();
        let subject = format!("chatd.dm.{node}.{}", fold(&to));
        let (from, _) = dm_parties(&line);
        let out = self.out.clone();
        tokio::spawn(async move {
            let answered = matches!(
                tokio::time::timeout(OP_TIMEOUT, client.request(subject, line.into())).await,
                Ok(Ok(reply)) if &reply.payload[..] == b"ok"
            );
            if answered {
                return;
            }
            if store {
                let _ = tx.send(Inner::Retry(Pending::Store { to, line: out_line }));
            } else {
                out.send(FromCluster::DmFailed { from, to });
            }
        });
    }

    fn fail_dm(&self, line: &str, to: &str) {
        let (from, _) = dm_parties(line);
        self.out.send(FromCluster::DmFailed {
            from,
            to: to.to_string(),
        });
    }

    async fn take_inbox(&mut self, nick: &str) {
        let subject = format!("chatd.inbox.{}", fold(nick));
        let Some(lines) = self.fetch(INBOX, subject.clone(), 1).await else {
            self.to_take.insert(nick.to_string());
            return;
        };
        let Some(last) = lines.last().map(|l| l.0) else {
            return;
        };
        self.out.send(FromCluster::Inbox {
            nick: nick.to_string(),
            lines: lines.into_iter().map(|(_, l, _)| l).collect(),
        });
        if let Some(s) = self.inbox_stream.clone() {
            let purge = s.purge().filter(subject).sequence(last + 1);
            if let Err(e) = tokio::time::timeout(OP_TIMEOUT, purge.into_future()).await {
                warn!("cluster: emptying the inbox of {nick} timed out: {e}");
            }
        }
    }
}

/// Hands a post that could not be published back to the core, once.
fn show_unsent(out: &Out, p: &mut Pending) {
    if let Pending::Post {
        room,
        line,
        id,
        shown,
    } = p
        && !*shown
    {
        *shown = true;
        out.send(FromCluster::Unsent {
            room: room.clone(),
            line: line.clone(),
            id: *id,
        });
    }
}

type Peers = Arc<std::sync::Mutex<HashMap<String, Peer>>>;

/// A heartbeat: note the node; a node new (or restarted) is asked for
/// everybody on it.
fn beat(
    peers: &Peers,
    me: &str,
    msg: &Message,
    client: &async_nats::Client,
    tx: &UnboundedSender<Inner>,
) {
    let node = msg.subject.as_str().rsplit('.').next().unwrap_or_default();
    if node == me || node.is_empty() {
        return;
    }
    let incarnation = String::from_utf8_lossy(&msg.payload).into_owned();
    let Ok(mut map) = peers.lock() else {
        return;
    };
    let known = map.get(node).is_some_and(|p| p.incarnation == incarnation);
    map.insert(
        node.to_string(),
        Peer {
            seen: Instant::now(),
            incarnation,
        },
    );
    drop(map);
    if !known {
        info!("cluster: node {node} is here");
        let (client, tx, node) = (client.clone(), tx.clone(), node.to_string());
        tokio::spawn(async move {
            let subject = format!("chatd.roster.{node}");
            if let Ok(Ok(reply)) =
                tokio::time::timeout(OP_TIMEOUT, client.request(subject, "".into())).await
            {
                let people = decode_roster(&String::from_utf8_lossy(&reply.payload));
                let _ = tx.send(Inner::Roster { node, people });
            }
        });
    }
}

fn expire_peers(peers: &Peers, expire: Duration, out: &Out) {
    let gone: Vec<String> = match peers.lock() {
        Ok(mut map) => {
            let gone: Vec<String> = map
                .iter()
                .filter(|(_, p)| p.seen.elapsed() > expire)
                .map(|(n, _)| n.clone())
                .collect();
            for n in &gone {
                map.remove(n);
            }
            gone
        }
        Err(_) => Vec::new(),
    };
    for node in gone {
        info!("cluster: node {node} is gone (silent for {expire:?})");
        out.send(FromCluster::NodeGone(node));
    }
}

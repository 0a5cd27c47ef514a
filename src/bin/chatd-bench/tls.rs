//! `idle --tls-ca FILE`: the idle scenario over chatd's TLS port, so the
//! memory a TLS connection costs (rustls' state and buffers beside the
//! plain connection's) is measured, not guessed. Connections are named and
//! joined, then held without reading: an idle chat connection is sent
//! nothing.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::Proc;
use super::perf::idle_in_two_stops;

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Connects over TLS, names itself and joins `room`; returns once the join
/// is confirmed.
fn join(
    cfg: &Arc<ClientConfig>,
    addr: SocketAddr,
    nick: &str,
    room: &str,
) -> io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    let conn = ClientConnection::new(cfg.clone(), name).map_err(io::Error::other)?;
    let mut s = StreamOwned::new(conn, tcp);
    s.write_all(format!("{nick}\n/join {room}\n").as_bytes())?;
    s.flush()?;
    let want = format!("*** {nick} joined {room}");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::other(format!(
                "{nick}: closed during the handshake"
            )));
        }
        seen.extend_from_slice(buf.get(..n).unwrap_or(&[]));
        if memchr::memmem::find(&seen, want.as_bytes()).is_some() {
            return Ok(s);
        }
        if seen.len() > 64 * 1024 {
            return Err(io::Error::other(format!("{nick}: no join confirmation")));
        }
    }
}

/// `n` TLS connections in rooms of `room_size`; resident memory per
/// connection from /proc, as [`crate::perf::idle`] reports it.
pub fn idle(
    addr: SocketAddr,
    ca: &Path,
    n: usize,
    room_size: usize,
    p: Proc,
    hold: Duration,
    workers: usize,
) -> Result<String, String> {
    let cfg = chatd::tls::client_config(Some(ca)).map_err(|e| e.to_string())?;
    let run = std::process::id();
    idle_in_two_stops("tls", n, room_size, &p, hold, |from, count| {
        let held: Mutex<Vec<TlsStream>> = Mutex::new(Vec::with_capacity(count));
        let next = AtomicUsize::new(0);
        let failed: Mutex<Option<String>> = Mutex::new(None);
        thread::scope(|sc| {
            for _ in 0..workers.clamp(1, count.max(1)) {
                sc.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count || failed.lock().map_or(true, |f| f.is_some()) {
                            return;
                        }
                        let i = from + i;
                        let nick = format!("t{i}x{run}");
                        let room = format!("#tls{run}r{}", i / room_size.max(1));
                        match join(&cfg, addr, &nick, &room) {
                            Ok(s) => {
                                if let Ok(mut h) = held.lock() {
                                    h.push(s);
                                }
                            }
                            Err(e) => {
                                if let Ok(mut f) = failed.lock() {
                                    f.get_or_insert(format!("connection {i}: {e}"));
                                }
                                return;
                            }
                        }
                    }
                });
            }
        });
        if let Some(e) = failed.into_inner().ok().flatten() {
            return Err(e);
        }
        held.into_inner().map_err(|e| e.to_string())
    })
}

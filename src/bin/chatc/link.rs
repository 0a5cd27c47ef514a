//! The connection to the server, plain or TLS, split into a reader (the
//! network thread's) and a writer (the main thread's).
//!
//! A plain link is a `TcpStream` and its clone. A TLS link shares one
//! rustls `ClientConnection` behind a mutex: the reader waits on its own
//! clone of the socket *without* holding the lock, then takes the lock only
//! to hand the bytes to rustls and take the plaintext out; the writer takes
//! it to encrypt and send. So neither side ever waits on the other's I/O.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a link could not be set up. `Fatal` ones (a certificate that is not
/// trusted) would fail the same way on every retry, so chatc stops.
pub enum LinkError {
    Retry(String),
    Fatal(String),
}

pub type Writer = Box<dyn Write + Send>;
pub type Reader = Box<dyn Read + Send>;

/// Connects to `addr` (`host:port`); with `tls`, verifies the server's
/// certificate for `host` before anything else is said.
pub fn connect(addr: &str, tls: Option<&Arc<ClientConfig>>) -> Result<(Reader, Writer), LinkError> {
    let sock = TcpStream::connect(addr)
        .map_err(|e| LinkError::Retry(format!("cannot connect to {addr}: {e}")))?;
    let _ = sock.set_nodelay(true);
    let raw = sock
        .try_clone()
        .map_err(|e| LinkError::Retry(e.to_string()))?;
    let Some(cfg) = tls else {
        return Ok((Box::new(raw), Box::new(sock)));
    };
    let host = host_of(addr);
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| LinkError::Fatal(format!("{host} is not a valid TLS server name")))?;
    let mut conn = ClientConnection::new(cfg.clone(), name)
        .map_err(|e| LinkError::Fatal(format!("TLS: {e}")))?;
    let mut s = sock;
    let _ = s.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut s) {
            return Err(classify(host, e));
        }
    }
    let _ = s.set_read_timeout(None);
    let shared = Arc::new(Mutex::new(Tls { conn, sock: s }));
    Ok((
        Box::new(TlsReader {
            shared: shared.clone(),
            raw,
            plain: Vec::new(),
            pos: 0,
        }),
        Box::new(TlsWriter(shared)),
    ))
}

/// `host` of `host:port` or `[v6]:port`.
pub fn host_of(addr: &str) -> &str {
    match addr.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => addr.rsplit_once(':').map_or(addr, |(h, _)| h),
    }
}

/// A certificate problem is fatal and said plainly; anything else (the
/// server went away mid-handshake) is worth retrying.
fn classify(host: &str, e: io::Error) -> LinkError {
    let inner = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .cloned();
    match inner {
        Some(rustls::Error::InvalidCertificate(why)) => LinkError::Fatal(format!(
            "the server's certificate is not trusted for {host}: {why:?}. Refusing to connect; \
             if this is your own server, give its CA with --ca FILE"
        )),
        Some(other) => LinkError::Fatal(format!("TLS handshake with {host} failed: {other}")),
        None => LinkError::Retry(format!("TLS handshake with {host}: {e}")),
    }
}

struct Tls {
    conn: ClientConnection,
    sock: TcpStream,
}

impl Tls {
    /// Sends whatever rustls has ready (records, alerts).
    fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }
}

struct TlsReader {
    shared: Arc<Mutex<Tls>>,
    raw: TcpStream,
    plain: Vec<u8>,
    pos: usize,
}

fn poisoned() -> io::Error {
    io::Error::other("TLS state lost")
}

impl Read for TlsReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.plain.len() {
                let src = self.plain.get(self.pos..).unwrap_or(&[]);
                let n = src.len().min(out.len());
                if let (Some(dst), Some(src)) = (out.get_mut(..n), src.get(..n)) {
                    dst.copy_from_slice(src);
                }
                self.pos += n;
                return Ok(n);
            }
            self.plain.clear();
            self.pos = 0;
            let mut buf = [0u8; 16 * 1024];
            let n = self.raw.read(&mut buf)?;
            if n == 0 {
                return Ok(0);
            }
            let mut g = self.shared.lock().map_err(|_| poisoned())?;
            let mut records = buf.get(..n).unwrap_or(&[]);
            while !records.is_empty() {
                g.conn.read_tls(&mut records)?;
                g.conn
                    .process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                // Take the plaintext out each time, so rustls's own buffer
                // never fills.
                match g.conn.reader().read_to_end(&mut self.plain) {
                    Ok(_) => {
                        // close_notify: the server is done.
                        if self.plain.is_empty() {
                            return Ok(0);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            g.flush()?;
        }
    }
}

struct TlsWriter(Arc<Mutex<Tls>>);

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut g = self.0.lock().map_err(|_| poisoned())?;
        let n = g.conn.writer().write(buf)?;
        g.flush()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().map_err(|_| poisoned())?.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts() {
        assert_eq!(host_of("localhost:9997"), "localhost");
        assert_eq!(host_of("[::1]:9997"), "::1");
        assert_eq!(host_of("10.0.0.1:1"), "10.0.0.1");
    }
}

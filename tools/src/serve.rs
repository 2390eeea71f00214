//! `phase serve`: a development provider for a published tree. HTTP/1.1 on
//! std::net with a thread per connection (the xtask and tests need a handful
//! of clients, not thousands), optional TLS through rustls, single byte
//! ranges, `/health`, and one log line per request. No directory listings,
//! no index files, nothing outside the tree.
//!
//! A fleet outgrows it by putting the same tree on nginx, a CDN or an object
//! store: the tree is static files.
//!
//! Framing follows RFC 9112 strictly, because a server and a proxy in front
//! of it that split a byte stream into requests differently can be made to
//! see a request one of them never checked (request smuggling): lines end
//! in CRLF only (a bare CR or LF is refused), no obsolete line folding,
//! exactly one `Host` in HTTP/1.1, and since GET and HEAD take no body,
//! any `Transfer-Encoding`, any non-zero or malformed `Content-Length` and
//! any `Content-Length` values that disagree are answered 400 and the
//! connection is closed (§6.3). The request head is at most [`MAX_HEAD`]
//! bytes, exactly.
//!
//! Deadlines hold a whole request and a whole response, not single reads:
//! a client that sends one byte every few seconds (slowloris) or reads one
//! byte every few seconds would otherwise keep a connection slot forever,
//! and enough of them would keep every slot ([`Limits`]).

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use thiserror::Error;

/// Largest request head accepted: request line, headers and the blank line
/// that ends them, in bytes.
pub const MAX_HEAD: usize = 16 * 1024;

/// How long and how many: each bound is on a whole request or response, so
/// no pace of client can stretch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// From the first byte of a request to the end of its head.
    pub head: Duration,
    /// How long a connection may wait for the first byte of a request (a
    /// new or keep-alive connection).
    pub idle: Duration,
    /// A response must be taken at least this fast (bytes per second), after
    /// a grace of `idle`: its whole deadline is `idle + length / min_rate`.
    pub min_rate: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 256,
            head: Duration::from_secs(10),
            idle: Duration::from_secs(30),
            min_rate: 64 << 10,
        }
    }
}

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("{0} is not a directory")]
    Root(PathBuf, #[source] io::Error),
    #[error("bind {0}")]
    Bind(SocketAddr, #[source] io::Error),
    #[error("read certificate chain {0}")]
    ReadCert(PathBuf, #[source] rustls_pki_types::pem::Error),
    #[error("read private key {0}")]
    ReadKey(PathBuf, #[source] rustls_pki_types::pem::Error),
    #[error("TLS configuration from {cert} and {key}")]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("accept on {0}")]
    Accept(SocketAddr, #[source] io::Error),
}

/// Certificate chain and key, both PEM.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One served request.
#[derive(Debug, Clone, Serialize)]
pub struct RequestLog {
    pub peer: SocketAddr,
    pub method: String,
    pub target: String,
    pub range: Option<String>,
    pub status: u16,
    /// Body bytes in the response.
    pub bytes: u64,
    /// The connection failed while the response was being sent; this is a
    /// second line for a request already logged.
    pub aborted: bool,
}

impl fmt::Display for RequestLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} \"{} {}\" {} {}",
            self.peer, self.method, self.target, self.status, self.bytes
        )?;
        if let Some(range) = &self.range {
            write!(f, " range={range}")?;
        }
        if self.aborted {
            f.write_str(" aborted")?;
        }
        Ok(())
    }
}

/// Where request log lines go.
pub type LogSink = Arc<dyn Fn(&RequestLog) + Send + Sync>;

/// A bound server, not yet accepting.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    root: PathBuf,
    tls: Option<Arc<ServerConfig>>,
    log: LogSink,
    stop: Arc<AtomicBool>,
    limits: Limits,
}

impl Server {
    /// Binds `listen` (port 0 picks a free port) to serve `root`.
    pub fn bind(
        root: &Path,
        listen: SocketAddr,
        tls: Option<&TlsFiles>,
        log: LogSink,
    ) -> Result<Server, ServeError> {
        let root = root
            .canonicalize()
            .and_then(|r| {
                if r.is_dir() {
                    Ok(r)
                } else {
                    Err(io::Error::from(io::ErrorKind::NotADirectory))
                }
            })
            .map_err(|e| ServeError::Root(root.to_owned(), e))?;
        let tls = tls.map(tls_config).transpose()?;
        let listener = TcpListener::bind(listen).map_err(|e| ServeError::Bind(listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ServeError::Bind(listen, e))?;
        Ok(Server {
            listener,
            addr,
            root,
            tls,
            log,
            stop: Arc::new(AtomicBool::new(false)),
            limits: Limits::default(),
        })
    }

    /// Replaces the default [`Limits`].
    pub fn limits(mut self, limits: Limits) -> Server {
        self.limits = limits;
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/` or `https://ADDR/`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/", self.addr)
    }

    /// Accepts connections until [`ServerHandle::shutdown`] (or forever).
    pub fn run(self) -> Result<(), ServeError> {
        let active = Arc::new(AtomicUsize::new(0));
        let limits = self.limits;
        let shared = Arc::new(Shared {
            root: self.root,
            tls: self.tls,
            log: self.log,
            limits,
        });
        for stream in self.listener.incoming() {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let stream = match stream {
                Ok(s) => s,
                // A client that gave up between SYN and accept is its problem.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => return Err(ServeError::Accept(self.addr, e)),
            };
            if active.fetch_add(1, Ordering::SeqCst) >= limits.max_connections {
                active.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let shared = Arc::clone(&shared);
            let active = Arc::clone(&active);
            thread::spawn(move || {
                // A connection's I/O error ends that connection only.
                let _ = shared.connection(stream);
                active.fetch_sub(1, Ordering::SeqCst);
            });
        }
        Ok(())
    }

    /// Runs the server on a thread.
    pub fn spawn(self) -> ServerHandle {
        let addr = self.addr;
        let url = self.url();
        let stop = Arc::clone(&self.stop);
        let thread = thread::spawn(move || self.run());
        ServerHandle {
            addr,
            url,
            stop,
            thread: Some(thread),
        }
    }
}

/// A running server; stops when shut down or dropped.
pub struct ServerHandle {
    addr: SocketAddr,
    url: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), ServeError>>>,
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/` or `https://ADDR/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops accepting and waits for the accept loop to end. Connections in
    /// progress finish on their own threads.
    pub fn shutdown(mut self) -> Result<(), ServeError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), ServeError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with one connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let _ = TcpStream::connect(wake);
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

fn tls_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, ServeError> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServeError::ReadCert(files.cert.clone(), e))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| ServeError::ReadKey(files.key.clone(), e))?;
    let tls_error = |source| ServeError::Tls {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(tls_error)?;
    Ok(Arc::new(config))
}

struct Shared {
    root: PathBuf,
    tls: Option<Arc<ServerConfig>>,
    log: LogSink,
    limits: Limits,
}

/// A socket whose every read and write is bounded by a deadline for the
/// whole exchange in progress; under TLS it sits below rustls, so the
/// handshake and each record are bounded too.
struct Deadlined {
    sock: TcpStream,
    read_by: Option<Instant>,
    write_by: Option<Instant>,
}

impl Deadlined {
    fn remaining(by: Option<Instant>) -> io::Result<Option<Duration>> {
        let Some(by) = by else { return Ok(None) };
        let left = by.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        Ok(Some(left))
    }

    /// A timeout on the socket shows as `WouldBlock`; it is the deadline.
    fn timed_out(e: io::Error) -> io::Error {
        if e.kind() == io::ErrorKind::WouldBlock {
            io::Error::from(io::ErrorKind::TimedOut)
        } else {
            e
        }
    }
}

impl Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.set_read_timeout(Self::remaining(self.read_by)?)?;
        self.sock.read(buf).map_err(Self::timed_out)
    }
}

impl Write for Deadlined {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock
            .set_write_timeout(Self::remaining(self.write_by)?)?;
        self.sock.write(buf).map_err(Self::timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

/// Closes in stages (RFC 9112 §9.6): our side first, then whatever the
/// client still sends is read and dropped, briefly. Closing with unread
/// input makes the kernel send a reset, which can destroy the response (a
/// 400 or 431 sent while the client is still writing) before the client
/// reads it.
fn linger(sock: &mut Deadlined) {
    if sock.sock.shutdown(std::net::Shutdown::Write).is_err() {
        return;
    }
    sock.read_by = Some(Instant::now() + Duration::from_secs(1));
    let mut buf = [0u8; 4096];
    let mut left: usize = 256 << 10;
    while left > 0 {
        match sock.read(&mut buf) {
            Ok(0) | Err(_) => return,
            // n ≤ buf.len(); saturating keeps the count from wrapping.
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// A connection, plain or TLS, whose deadlines can be set.
trait Conn: Read + Write {
    fn deadlines(&mut self) -> &mut Deadlined;
}

impl Conn for Deadlined {
    fn deadlines(&mut self) -> &mut Deadlined {
        self
    }
}

impl Conn for rustls::StreamOwned<rustls::ServerConnection, Deadlined> {
    fn deadlines(&mut self) -> &mut Deadlined {
        &mut self.sock
    }
}

/// How reading a request head ended.
enum Head {
    /// The head is `buf[..len]`.
    Complete(usize),
    /// The client closed the connection between requests.
    Closed,
    TooLarge,
    /// The deadline passed; `started` when some of the head had arrived.
    TimedOut {
        started: bool,
    },
}

impl Shared {
    fn connection(&self, stream: TcpStream) -> io::Result<()> {
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        let sock = Deadlined {
            sock: stream,
            read_by: None,
            write_by: None,
        };
        match &self.tls {
            Some(config) => {
                let conn =
                    rustls::ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
                let mut tls = rustls::StreamOwned::new(conn, sock);
                self.http(&mut tls, peer)?;
                tls.sock.write_by = Some(Instant::now() + self.limits.idle);
                tls.conn.send_close_notify();
                tls.flush()?;
                linger(&mut tls.sock);
                Ok(())
            }
            None => {
                let mut sock = sock;
                self.http(&mut sock, peer)?;
                linger(&mut sock);
                Ok(())
            }
        }
    }

    /// Reads one request head into `buf` (which may hold bytes of it
    /// already, pipelined after the previous request): at most `idle` for
    /// its first byte, then at most `head` from that byte to its end, and
    /// never more than [`MAX_HEAD`] bytes.
    fn read_head(&self, stream: &mut impl Conn, buf: &mut Vec<u8>) -> io::Result<Head> {
        let mut first_byte = (!buf.is_empty()).then(Instant::now);
        let by = Some(match first_byte {
            Some(at) => at + self.limits.head,
            None => Instant::now() + self.limits.idle,
        });
        // Under TLS a read may write (handshake records): that too is bound.
        let d = stream.deadlines();
        (d.read_by, d.write_by) = (by, by);
        loop {
            // The head ends at the first blank line, which must end within
            // MAX_HEAD bytes; bytes after it belong to the next request.
            let window = &buf[..buf.len().min(MAX_HEAD)];
            if let Some(at) = window.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(Head::Complete(at + 4));
            }
            if buf.len() >= MAX_HEAD {
                return Ok(Head::TooLarge);
            }
            let mut chunk = [0u8; 4096];
            let want = (MAX_HEAD - buf.len()).min(chunk.len());
            let n = match stream.read(&mut chunk[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Ok(Head::TimedOut {
                        started: first_byte.is_some(),
                    });
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                // A close mid-head is the client's loss; between requests
                // it is the ordinary end of a connection.
                return Ok(Head::Closed);
            }
            buf.extend_from_slice(&chunk[..n]);
            if first_byte.is_none() {
                let at = Instant::now();
                first_byte = Some(at);
                let d = stream.deadlines();
                (d.read_by, d.write_by) =
                    (Some(at + self.limits.head), Some(at + self.limits.head));
            }
        }
    }

    /// Sends `response` within its whole-response deadline.
    fn send(
        &self,
        stream: &mut impl Conn,
        response: Response,
        method: Option<&str>,
        keep_alive: bool,
    ) -> io::Result<()> {
        let len = response.body_len(method.unwrap_or("GET"));
        let pace = Duration::from_secs(len / self.limits.min_rate.max(1));
        stream.deadlines().write_by = Some(Instant::now() + self.limits.idle + pace);
        let result = response.send(stream, method, keep_alive);
        stream.deadlines().write_by = None;
        result
    }

    /// Serves requests on one connection until it closes, a response says
    /// `Connection: close`, or a deadline passes.
    fn http(&self, stream: &mut impl Conn, peer: SocketAddr) -> io::Result<()> {
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        loop {
            let refuse = |status: u16, reason: &str| {
                let response = Response::error(status, reason);
                (self.log)(&RequestLog {
                    peer,
                    method: "-".into(),
                    target: "-".into(),
                    range: None,
                    status,
                    bytes: response.body_len("GET"),
                    aborted: false,
                });
                response
            };
            let head_len = match self.read_head(stream, &mut buf)? {
                Head::Complete(len) => len,
                Head::Closed | Head::TimedOut { started: false } => return Ok(()),
                Head::TooLarge => {
                    let response = refuse(431, "request head too large");
                    return self.send(stream, response, None, false);
                }
                Head::TimedOut { started: true } => {
                    let response = refuse(408, "request head not complete in time");
                    return self.send(stream, response, None, false);
                }
            };
            let request = Request::parse(&buf[..head_len]);
            buf.drain(..head_len);
            let request = match request {
                Ok(request) => request,
                Err(reason) => {
                    // The framing is in doubt: nothing after this head can
                    // be trusted to be a request, so the connection ends.
                    let response = refuse(400, reason);
                    return self.send(stream, response, None, false);
                }
            };
            // GET and HEAD carry no body; one that does would desynchronise
            // the connection, so it is refused and the connection closed.
            let keep_alive = request.keep_alive && !request.has_body;
            let response = if request.has_body {
                Response::error(400, "a request body is not accepted")
            } else {
                self.respond(&request)
            };
            // Logged before the body goes out, so that a client that has
            // read the whole response can rely on the line being there.
            let mut entry = RequestLog {
                peer,
                method: request.method.clone(),
                target: request.target.clone(),
                range: request.range.clone(),
                status: response.status,
                bytes: response.body_len(&request.method),
                aborted: false,
            };
            (self.log)(&entry);
            if let Err(e) = self.send(stream, response, Some(&request.method), keep_alive) {
                entry.aborted = true;
                (self.log)(&entry);
                return Err(e);
            }
            if !keep_alive {
                return Ok(());
            }
        }
    }

    fn respond(&self, request: &Request) -> Response {
        if request.method != "GET" && request.method != "HEAD" {
            let mut r = Response::error(405, "only GET and HEAD");
            r.headers.push(("Allow", "GET, HEAD".into()));
            return r;
        }
        let path = request.target.split('?').next().unwrap_or("");
        if path == "/health" {
            return Response::text(200, "ok\n");
        }
        let Some(file) = self.resolve(path) else {
            return Response::error(404, "not found");
        };
        let (mut handle, size) = match File::open(&file).and_then(|f| {
            let size = f.metadata()?.len();
            Ok((f, size))
        }) {
            Ok(x) => x,
            Err(_) => return Response::error(404, "not found"),
        };
        let content_type = if path.ends_with(".json") {
            "application/json"
        } else {
            "application/octet-stream"
        };
        // Blobs are named by their content and never change; everything else
        // (manifests) must be revalidated.
        let cache = if path.starts_with(&format!("/{}/", crate::publish::BLOB_DIR)) {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        let range = request
            .range
            .as_deref()
            .map_or(Range::Full, |r| Range::parse(r, size));
        let (status, start, len) = match range {
            Range::Full => (200, 0, size),
            // end < size, start ≤ end: no overflow.
            Range::Partial(start, end) => (206, start, end - start + 1),
            Range::Unsatisfiable => {
                let mut r = Response::error(416, "range not satisfiable");
                r.headers.push(("Content-Range", format!("bytes */{size}")));
                return r;
            }
        };
        if start > 0 && handle.seek(SeekFrom::Start(start)).is_err() {
            return Response::error(500, "seek failed");
        }
        let mut response = Response {
            status,
            headers: vec![
                ("Content-Type", content_type.into()),
                ("Accept-Ranges", "bytes".into()),
                ("Cache-Control", cache.into()),
            ],
            body: Body::File(handle, len),
        };
        if status == 206 {
            response.headers.push((
                "Content-Range",
                format!("bytes {start}-{}/{size}", start + len - 1),
            ));
        }
        response
    }

    /// Maps a request path to a regular file under the root, or nothing.
    /// Paths follow the artifact-path rule (no `..`, no empty segments, no
    /// percent-encoding), and a symlink may not lead out of the tree.
    fn resolve(&self, path: &str) -> Option<PathBuf> {
        let relative = path.strip_prefix('/')?;
        if !phase_manifest::schema::is_relative_path(relative) {
            return None;
        }
        let file = self.root.join(relative).canonicalize().ok()?;
        (file.starts_with(&self.root) && file.is_file()).then_some(file)
    }
}

/// The parts of a request the server uses.
struct Request {
    method: String,
    target: String,
    range: Option<String>,
    keep_alive: bool,
    has_body: bool,
}

impl Request {
    /// Parses a complete head (ending in CRLF CRLF), or says why its framing
    /// is refused.
    fn parse(head: &[u8]) -> Result<Request, &'static str> {
        check_line_endings(head)?;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(head) {
            // httparse must see the same end of head as the CRLF CRLF search.
            Ok(httparse::Status::Complete(n)) if n == head.len() => {}
            _ => return Err("malformed request"),
        }
        let values = |name: &str| -> Vec<String> {
            parsed
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
                .collect()
        };
        let one = |name: &str| values(name).into_iter().next();
        let version = parsed.version.ok_or("malformed request")?;
        let hosts = values("host").len();
        if (version == 1 && hosts != 1) || hosts > 1 {
            return Err("a request needs exactly one Host header");
        }
        let connection = one("connection").unwrap_or_default().to_ascii_lowercase();
        let keep_alive = match version {
            1 => !connection.contains("close"),
            _ => connection.contains("keep-alive"),
        };
        let has_body = match (
            values("transfer-encoding").is_empty(),
            content_length(&values("content-length"))?,
        ) {
            (false, Some(_)) => return Err("Transfer-Encoding and Content-Length together"),
            (false, None) => true,
            (true, length) => length.is_some_and(|n| n > 0),
        };
        Ok(Request {
            method: parsed.method.ok_or("malformed request")?.to_owned(),
            target: parsed.path.ok_or("malformed request")?.to_owned(),
            range: one("range"),
            keep_alive,
            has_body,
        })
    }
}

/// Every line of the head ends in CRLF: a CR not followed by LF, or an LF
/// not preceded by CR, is refused (RFC 9112 §2.2), and so is a line that
/// starts with a space or tab (obsolete folding, §5.2).
fn check_line_endings(head: &[u8]) -> Result<(), &'static str> {
    for (i, &b) in head.iter().enumerate() {
        match b {
            b'\r' if head.get(i + 1) != Some(&b'\n') => return Err("bare CR in the request head"),
            b'\n' if i == 0 || head[i - 1] != b'\r' => return Err("bare LF in the request head"),
            b'\n' if matches!(head.get(i + 1), Some(b' ' | b'\t')) => {
                return Err("obsolete line folding in the request head");
            }
            _ => {}
        }
    }
    Ok(())
}

/// The body length the `Content-Length` fields give (RFC 9110 §8.6): all
/// fields, and every element of a list in one, must be the same decimal
/// number; `None` without the header.
fn content_length(fields: &[String]) -> Result<Option<u64>, &'static str> {
    let mut length = None;
    for element in fields.iter().flat_map(|f| f.split(',')) {
        let n = digits(element.trim()).ok_or("malformed Content-Length")?;
        if length.is_some_and(|l| l != n) {
            return Err("Content-Length values differ");
        }
        length = Some(n);
    }
    Ok(length)
}

/// What a `Range` header asks of a file of a given size (RFC 9110 §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Range {
    /// No usable range: send the whole file. Also for several ranges, which
    /// a server may answer with the whole representation.
    Full,
    /// Inclusive byte positions, both < size.
    Partial(u64, u64),
    Unsatisfiable,
}

impl Range {
    fn parse(value: &str, size: u64) -> Range {
        let Some(spec) = value.strip_prefix("bytes=") else {
            return Range::Full;
        };
        if spec.contains(',') {
            return Range::Full;
        }
        let Some((first, last)) = spec.split_once('-') else {
            return Range::Full;
        };
        let (first, last) = (first.trim(), last.trim());
        if first.is_empty() {
            // A suffix: the last `n` bytes.
            return match digits(last) {
                Some(0) => Range::Unsatisfiable,
                Some(_) if size == 0 => Range::Unsatisfiable,
                Some(n) => Range::Partial(size.saturating_sub(n), size - 1),
                None => Range::Full,
            };
        }
        let Some(start) = digits(first) else {
            return Range::Full;
        };
        let end = if last.is_empty() {
            u64::MAX
        } else {
            match digits(last) {
                Some(end) if end >= start => end,
                _ => return Range::Full,
            }
        };
        if start >= size {
            return Range::Unsatisfiable;
        }
        Range::Partial(start, end.min(size - 1))
    }
}

/// A decimal number of ASCII digits only (`str::parse` would take `+5`).
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

enum Body {
    Bytes(Vec<u8>),
    /// A file positioned at the first byte to send, and the count.
    File(File, u64),
}

struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

impl Response {
    fn text(status: u16, text: &str) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
            body: Body::Bytes(text.as_bytes().to_vec()),
        }
    }

    fn error(status: u16, reason: &str) -> Response {
        Response::text(status, &format!("{status} {reason}\n"))
    }

    /// Body bytes this response carries for `method`.
    fn body_len(&self, method: &str) -> u64 {
        match (&self.body, method) {
            (_, "HEAD") => 0,
            (Body::Bytes(b), _) => b.len() as u64,
            (Body::File(_, len), _) => *len,
        }
    }

    /// Writes the response.
    fn send(
        self,
        stream: &mut impl Write,
        method: Option<&str>,
        keep_alive: bool,
    ) -> io::Result<()> {
        let len = match &self.body {
            Body::Bytes(b) => b.len() as u64,
            Body::File(_, len) => *len,
        };
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("Content-Length: {len}\r\n"));
        head.push_str(if keep_alive {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        stream.write_all(head.as_bytes())?;
        if method == Some("HEAD") {
            return stream.flush();
        }
        match self.body {
            Body::Bytes(b) => stream.write_all(&b)?,
            Body::File(file, len) => {
                let copied = io::copy(&mut file.take(len), stream)?;
                if copied != len {
                    // The file shrank under us: the promised length cannot be
                    // kept, so the connection must end.
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
            }
        }
        stream.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_header_table() {
        let size = 100;
        let table = [
            ("bytes=0-9", Range::Partial(0, 9)),
            ("bytes=90-", Range::Partial(90, 99)),
            ("bytes=90-1000", Range::Partial(90, 99)),
            ("bytes=-10", Range::Partial(90, 99)),
            ("bytes=-1000", Range::Partial(0, 99)),
            ("bytes=99-99", Range::Partial(99, 99)),
            ("bytes=100-", Range::Unsatisfiable),
            ("bytes=-0", Range::Unsatisfiable),
            ("bytes=5-4", Range::Full),
            ("bytes=0-1,5-6", Range::Full),
            ("bytes=+5-6", Range::Full),
            ("bytes=a-b", Range::Full),
            ("items=0-1", Range::Full),
            ("bytes=0-18446744073709551616", Range::Full),
        ];
        for (header, expected) in table {
            assert_eq!(Range::parse(header, size), expected, "{header}");
        }
        assert_eq!(Range::parse("bytes=-5", 0), Range::Unsatisfiable);
        assert_eq!(Range::parse("bytes=0-", 0), Range::Unsatisfiable);
    }
}

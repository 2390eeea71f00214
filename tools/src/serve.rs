//! `phase serve`: a development provider for a published tree. HTTP/1.1 on
//! std::net with a thread per connection (the xtask and tests need a handful
//! of clients, not thousands), optional TLS through rustls, single byte
//! ranges, `/health`, and one log line per request. No directory listings,
//! no index files, nothing outside the tree.
//!
//! A fleet outgrows it by putting the same tree on nginx, a CDN or an object
//! store: the tree is static files.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use thiserror::Error;

/// Largest request head (request line + headers) accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Connections served at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 256;
/// An idle keep-alive connection, or a stalled client, is closed after this.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

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
        })
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
        let shared = Arc::new(Shared {
            root: self.root,
            tls: self.tls,
            log: self.log,
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
            if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
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
}

impl Shared {
    fn connection(&self, stream: TcpStream) -> io::Result<()> {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        match &self.tls {
            Some(config) => {
                let conn =
                    rustls::ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
                let mut tls = rustls::StreamOwned::new(conn, stream);
                self.http(&mut tls, peer)?;
                tls.conn.send_close_notify();
                tls.flush()
            }
            None => {
                let mut stream = stream;
                self.http(&mut stream, peer)
            }
        }
    }

    /// Serves requests on one connection until it closes or a response says
    /// `Connection: close`.
    fn http(&self, stream: &mut (impl Read + Write), peer: SocketAddr) -> io::Result<()> {
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        loop {
            let head_len = loop {
                if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                if buf.len() > MAX_HEAD {
                    let response = Response::error(431, "request head too large");
                    return response.send(stream, None, false);
                }
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            };
            let request = Request::parse(&buf[..head_len]);
            buf.drain(..head_len);
            let Some(request) = request else {
                let response = Response::error(400, "malformed request");
                (self.log)(&RequestLog {
                    peer,
                    method: "-".into(),
                    target: "-".into(),
                    range: None,
                    status: 400,
                    bytes: response.body_len("GET"),
                    aborted: false,
                });
                response.send(stream, None, false)?;
                return Ok(());
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
            if let Err(e) = response.send(stream, Some(&request.method), keep_alive) {
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
    fn parse(head: &[u8]) -> Option<Request> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        if !matches!(parsed.parse(head), Ok(httparse::Status::Complete(_))) {
            return None;
        }
        let header = |name: &str| {
            parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
        };
        let connection = header("connection")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let version = parsed.version?;
        let keep_alive = match version {
            1 => !connection.contains("close"),
            _ => connection.contains("keep-alive"),
        };
        let has_body = header("transfer-encoding").is_some()
            || header("content-length").is_some_and(|v| v != "0");
        Some(Request {
            method: parsed.method?.to_owned(),
            target: parsed.path?.to_owned(),
            range: header("range"),
            keep_alive,
            has_body,
        })
    }
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

//! A provider that misbehaves on purpose, for the init's side of the fault
//! rows: it serves a published tree's files like any static server, except
//! that requests for blobs (`/blobs/…`) meet the chosen [`Fault`]. The
//! manifest is always served promptly and intact, so a boot gets as far as
//! the fault.
//!
//! HTTP/1.1 on 127.0.0.1 (guests reach it at 10.0.2.2) — over TLS with the
//! harness's test CA for [`Fault::Downgrade`], which needs an https mirror to
//! downgrade from — one thread per connection, `Connection: close`. It is a
//! test fixture, not a server: it reads the request head and nothing else.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::provider;

/// What blob requests get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The right bytes, `bytes_per_s` at a time, once a second. At 16 KiB/s
    /// it is above the client's minimum rate and never silent for long, so
    /// only a budget for the whole boot ends it; at 1 B/s the minimum rate
    /// does.
    Trickle { bytes_per_s: usize },
    /// The response headers (200, the right Content-Length), then silence
    /// before the first byte of the body, with the connection held open: a
    /// provider that hangs mid-transfer. Every client deadline ends each
    /// attempt; only a budget or the hardware watchdog ends a boot told to
    /// retry for long.
    Hang,
    /// Nothing at all after the request, the connection held open: a
    /// provider that hangs before the response head.
    Silent,
    /// 200 with the right Content-Length and as many bytes that are not the
    /// blob's: a mirror serving something else under the name.
    Garbage,
    /// 404 Not Found: a mirror that lacks the release.
    NotFound,
    /// 302 to the same URL, for ever.
    RedirectLoop,
    /// Served over https; 302 to the same path over plain http on
    /// `to_port` (a good mirror, so a client that followed would get the
    /// right bytes — without the protection TLS gave them).
    Downgrade { to_port: u16 },
    /// A Content-Length `by` bytes shorter than the body, then the whole
    /// body.
    ShortLength { by: u64 },
    /// A Content-Length `by` bytes longer than the body, the whole body, and
    /// the connection closed.
    LongLength { by: u64 },
    /// `Transfer-Encoding: chunked` whose chunks never end (the blob's bytes
    /// over and over).
    EndlessChunked,
}

/// A running fault provider; stops accepting when dropped.
pub struct FaultProvider {
    addr: SocketAddr,
    tls: bool,
    stop: Arc<AtomicBool>,
}

impl FaultProvider {
    /// Serves `tree` on a free loopback port with `fault` on blobs.
    pub fn start(tree: &Path, fault: Fault) -> Result<FaultProvider> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the fault provider")?;
        let addr = listener.local_addr()?;
        let tls = match fault {
            Fault::Downgrade { .. } => Some(tls_config()?),
            _ => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let tree = tree.to_owned();
        let stopping = stop.clone();
        let is_tls = tls.is_some();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let tree = tree.clone();
                let stopping = stopping.clone();
                let tls = tls.clone();
                std::thread::spawn(move || match tls {
                    None => serve(stream, &tree, fault, &stopping),
                    Some(config) => {
                        let Ok(conn) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        let mut tls = rustls::StreamOwned::new(conn, stream);
                        serve(&mut tls, &tree, fault, &stopping);
                        tls.conn.send_close_notify();
                        let _ = tls.flush();
                    }
                });
            }
        });
        eprintln!("provider: fault provider ({fault:?}) on {addr}");
        Ok(FaultProvider {
            addr,
            tls: is_tls,
            stop,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The tree's root as a guest sees it (`http://10.0.2.2:PORT/`, or
    /// `https://` when the fault needs TLS).
    pub fn guest_url(&self) -> String {
        provider::guest_url(if self.tls { "https" } else { "http" }, self.port())
    }
}

impl Drop for FaultProvider {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// The harness's test CA's server certificate (for 10.0.2.2 among others),
/// which test images pin.
fn tls_config() -> Result<Arc<ServerConfig>> {
    let ca = provider::test_ca()?;
    let certs = CertificateDer::pem_file_iter(&ca.cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading {}", ca.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&ca.key)
        .with_context(|| format!("reading {}", ca.key.display()))?;
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

fn serve<S: Read + Write>(stream: S, tree: &Path, fault: Fault, stop: &AtomicBool) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // The rest of the head, up to the empty line.
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    // A GET has no body, so nothing the reader buffered is lost.
    let mut out = reader.into_inner();
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    eprintln!("provider| fault provider: {}", request_line.trim_end());
    let Some(file) = file_in(tree, &path) else {
        let _ = out.write_all(&head("404 Not Found", "Content-Length: 0"));
        return;
    };
    let Ok(body) = std::fs::read(&file) else {
        let _ = out.write_all(&head("500 Internal Server Error", "Content-Length: 0"));
        return;
    };
    let length = |n: u64| format!("Content-Length: {n}");
    // body.len() fits in u64 on every host this runs on.
    let len = body.len() as u64;
    if !path.starts_with("/blobs/") {
        let _ = out
            .write_all(&head("200 OK", &length(len)))
            .and_then(|()| out.write_all(&body));
        let _ = out.flush();
        return;
    }
    match fault {
        Fault::Silent => hold(stop),
        Fault::Hang => {
            if out.write_all(&head("200 OK", &length(len))).is_err() {
                return;
            }
            let _ = out.flush();
            hold(stop);
        }
        Fault::Trickle { bytes_per_s } => {
            if out.write_all(&head("200 OK", &length(len))).is_err() {
                return;
            }
            for chunk in body.chunks(bytes_per_s.max(1)) {
                if stop.load(Ordering::SeqCst)
                    || out.write_all(chunk).and_then(|()| out.flush()).is_err()
                {
                    return;
                }
                // The pace is the fault itself, not a wait for anything.
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Fault::Garbage => {
            let _ = out
                .write_all(&head("200 OK", &length(len)))
                .and_then(|()| out.write_all(&garbage(body.len())));
        }
        Fault::NotFound => {
            let _ = out.write_all(&head("404 Not Found", "Content-Length: 0"));
        }
        Fault::RedirectLoop => {
            let _ = out.write_all(&head(
                "302 Found",
                &format!("Location: {path}\r\nContent-Length: 0"),
            ));
        }
        Fault::Downgrade { to_port } => {
            let _ = out.write_all(&head(
                "302 Found",
                &format!("Location: http://10.0.2.2:{to_port}{path}\r\nContent-Length: 0"),
            ));
        }
        Fault::ShortLength { by } => {
            let _ = out
                .write_all(&head("200 OK", &length(len.saturating_sub(by))))
                .and_then(|()| out.write_all(&body));
        }
        Fault::LongLength { by } => {
            let _ = out
                .write_all(&head("200 OK", &length(len.saturating_add(by))))
                .and_then(|()| out.write_all(&body));
        }
        Fault::EndlessChunked => {
            if out
                .write_all(&head("200 OK", "Transfer-Encoding: chunked"))
                .is_err()
            {
                return;
            }
            // Ends when the client hangs up (a write fails) or the provider
            // is dropped.
            for chunk in body.chunks(64 << 10).cycle() {
                let size = format!("{:x}\r\n", chunk.len());
                let framed = [size.as_bytes(), chunk, b"\r\n"];
                if stop.load(Ordering::SeqCst)
                    || framed.iter().any(|part| out.write_all(part).is_err())
                {
                    return;
                }
            }
        }
    }
    let _ = out.flush();
}

/// Holds the connection until the provider is dropped; the client gives up
/// on its own and the socket closes with the thread. Polling the flag is
/// the fault's own pace, not a wait for anything.
fn hold(stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What [`Fault::Garbage`] serves for a blob of `len` bytes.
pub fn garbage(len: usize) -> Vec<u8> {
    const TEXT: &[u8] = b"not the blob you asked for; ";
    TEXT.iter().copied().cycle().take(len).collect()
}

/// The SHA-256 of [`garbage`] of `len` bytes, in hex, as a refusal names it.
pub fn garbage_sha256(len: usize) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(garbage(len))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A response head with `headers` (CRLF-separated) and `Connection: close`.
fn head(status: &str, headers: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\n{headers}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// The file under `tree` for a request path, refusing anything that could
/// leave the tree.
fn file_in(tree: &Path, path: &str) -> Option<PathBuf> {
    let relative = path.split('?').next()?.trim_start_matches('/');
    if relative
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return None;
    }
    let file = tree.join(relative);
    file.is_file().then_some(file)
}

//! A provider that misbehaves on purpose, for the init's side of the fault
//! rows: it serves a published tree's files like any static server, except
//! that requests for blobs (`/blobs/…`) meet the chosen [`Fault`]. The
//! manifest is always served promptly and intact, so a boot gets as far as
//! the fault.
//!
//! Plain HTTP/1.1 on 127.0.0.1 (guests reach it at 10.0.2.2), one thread per
//! connection, `Connection: close`. It is a test fixture, not a server: it
//! reads the request head and nothing else.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

/// What blob requests get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The right bytes, `bytes_per_s` at a time, once a second: above the
    /// client's minimum rate and never silent for long, so only a budget
    /// for the whole boot ends it.
    Trickle { bytes_per_s: usize },
    /// The response headers (200, the right Content-Length), then silence
    /// with the connection held open: a provider that hangs mid-transfer.
    /// Every client deadline ends each attempt; only a budget or the
    /// hardware watchdog ends a boot told to retry for long.
    Hang,
}

/// A running fault provider; stops accepting when dropped.
pub struct FaultProvider {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl FaultProvider {
    /// Serves `tree` on a free loopback port with `fault` on blobs.
    pub fn start(tree: &Path, fault: Fault) -> Result<FaultProvider> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the fault provider")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let tree = tree.to_owned();
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let tree = tree.clone();
                let stopping = stopping.clone();
                std::thread::spawn(move || serve(stream, &tree, fault, &stopping));
            }
        });
        eprintln!("provider: fault provider ({fault:?}) on {addr}");
        Ok(FaultProvider { addr, stop })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for FaultProvider {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: TcpStream, tree: &Path, fault: Fault, stop: &AtomicBool) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
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
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    eprintln!("provider| fault provider: {}", request_line.trim_end());
    let mut out = stream;
    let Some(file) = file_in(tree, path) else {
        let _ = out
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let Ok(body) = std::fs::read(&file) else {
        let _ = out.write_all(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    if !path.starts_with("/blobs/") {
        let _ = out.write_all(&body);
        return;
    }
    match fault {
        Fault::Hang => {
            // Held until the provider is dropped; the client gives up on its
            // own and the socket closes with this thread. Polling the flag
            // is the fault's own pace, not a wait for anything.
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Fault::Trickle { bytes_per_s } => {
            for chunk in body.chunks(bytes_per_s.max(1)) {
                if stop.load(Ordering::SeqCst) || out.write_all(chunk).is_err() {
                    return;
                }
                // The pace is the fault itself, not a wait for anything.
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
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

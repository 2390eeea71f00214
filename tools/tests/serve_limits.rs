//! `phase serve` against clients that frame requests ambiguously (request
//! smuggling, RFC 9112 §6.3) or pace them to hold connection slots
//! (slowloris), over real sockets.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::Fixture;
use phase_tools::serve::{Limits, MAX_HEAD, RequestLog, Server, ServerHandle};

fn serve(
    root: &std::path::Path,
    limits: Limits,
) -> (
    ServerHandle,
    Arc<Mutex<Vec<RequestLog>>>,
    mpsc::Receiver<RequestLog>,
) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let server = Server::bind(
        root,
        "127.0.0.1:0".parse().unwrap(),
        None,
        Arc::new(move |line: &RequestLog| {
            sink.lock().unwrap().push(line.clone());
            let _ = tx.lock().unwrap().send(line.clone());
        }),
    )
    .unwrap()
    .limits(limits);
    (server.spawn(), log, rx)
}

/// Sends `raw` and reads until the server closes (or 10 s pass, which fails).
fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(raw).unwrap();
    let mut out = Vec::new();
    match stream.read_to_end(&mut out) {
        Ok(_) => {}
        // A server that closes with unread bytes in its buffer resets.
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not close the connection: {e}"),
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn statuses(response: &str) -> Vec<&str> {
    response
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &response[i + 9..i + 12])
        .collect()
}

#[test]
fn ambiguous_framing_is_answered_400_and_nothing_after_it_is_served() {
    let f = Fixture::new();
    let (server, log, _) = serve(&f.tree, Limits::default());
    // Each head is followed by a second request that a server reading the
    // framing another way would take for a request of its own.
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    let table: &[(&str, &str)] = &[
        (
            "Content-Length: 0\r\nContent-Length: 37\r\n",
            "Content-Length values differ",
        ),
        (
            "Content-Length: 37\r\nContent-Length: 0\r\n",
            "Content-Length values differ",
        ),
        ("Content-Length: 0, 37\r\n", "Content-Length values differ"),
        ("Content-Length: +0\r\n", "malformed Content-Length"),
        ("Content-Length: 0x0\r\n", "malformed Content-Length"),
        ("Content-Length: \r\n", "malformed Content-Length"),
        (
            "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding and Content-Length together",
        ),
        (
            "Transfer-Encoding: chunked\r\n",
            "a request body is not accepted",
        ),
        ("X-A: a\r\n b\r\n", "obsolete line folding"),
        ("X-A: a\r\n\tb\r\n", "obsolete line folding"),
        ("X-A: a\rX-B: b\r\n", "bare CR"),
        ("X-A: a\nX-B: b\r\n", "bare LF"),
        ("Host: u\r\n", "exactly one Host"),
    ];
    for (headers, reason) in table {
        let raw = format!("GET /health HTTP/1.1\r\nHost: t\r\n{headers}\r\n{smuggled}");
        let response = exchange(server.addr(), raw.as_bytes());
        assert_eq!(statuses(&response), ["400"], "{headers:?}:\n{response}");
        assert!(
            response.contains(reason),
            "{headers:?} lacks {reason:?}:\n{response}"
        );
        assert!(response.contains("Connection: close\r\n"), "{response}");
    }
    let missing_host = exchange(server.addr(), b"GET /health HTTP/1.1\r\n\r\n");
    assert_eq!(statuses(&missing_host), ["400"], "{missing_host}");
    // The controls: agreeing lengths, or none, keep the connection, and the
    // second request is served as the second request.
    for headers in [
        "",
        "Content-Length: 0\r\n",
        "Content-Length: 0\r\nContent-Length: 0\r\n",
        "Content-Length: 0, 0\r\n",
    ] {
        let raw = format!(
            "GET /health HTTP/1.1\r\nHost: t\r\n{headers}\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        );
        let response = exchange(server.addr(), raw.as_bytes());
        assert_eq!(
            statuses(&response),
            ["200", "404"],
            "{headers:?}:\n{response}"
        );
    }
    let log = log.lock().unwrap();
    let smuggled_seen = log.iter().filter(|l| l.target == "/smuggled").count();
    assert_eq!(smuggled_seen, 4, "only the controls reach /smuggled");
}

#[test]
fn the_request_head_limit_is_exact() {
    let f = Fixture::new();
    let (server, _, _) = serve(&f.tree, Limits::default());
    // A head of exactly `len` bytes, blank line included.
    let head = |len: usize| {
        let fixed = "GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Pad: \r\n\r\n".len();
        let pad = "a".repeat(len - fixed);
        format!("GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Pad: {pad}\r\n\r\n")
    };
    for (len, status) in [
        (MAX_HEAD - 1, "200"),
        (MAX_HEAD, "200"),
        (MAX_HEAD + 1, "431"),
        (MAX_HEAD + 4096, "431"),
    ] {
        let raw = head(len);
        assert_eq!(raw.len(), len);
        // Whole, and a byte at a time near the boundary.
        let response = exchange(server.addr(), raw.as_bytes());
        assert_eq!(statuses(&response), [status], "{len} bytes");
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (bulk, tail) = raw.as_bytes().split_at(MAX_HEAD - 8);
        stream.write_all(bulk).unwrap();
        for byte in tail {
            if stream.write_all(&[*byte]).is_err() {
                break;
            }
        }
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        let response = String::from_utf8_lossy(&out);
        assert_eq!(statuses(&response), [status], "{len} bytes, split");
    }
}

/// A client that sends a request head one byte at a time, `every` apart,
/// until the server ends the connection; returns how long it was let run.
fn slowloris(addr: SocketAddr, every: Duration) -> thread::JoinHandle<Duration> {
    thread::spawn(move || {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(every)).unwrap();
        let endless = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: "
            .iter()
            .chain(std::iter::repeat(&b'a'));
        for byte in endless {
            if stream.write_all(&[*byte]).is_err() {
                break;
            }
            // The read doubles as the pace: it returns at once when the
            // server answers or closes, else after `every`.
            let mut buf = [0u8; 512];
            match stream.read(&mut buf) {
                Ok(_) => break,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
            assert!(started.elapsed() < Duration::from_secs(60), "never cut off");
        }
        started.elapsed()
    })
}

#[test]
fn slowloris_clients_are_cut_off_and_a_good_client_is_served() {
    let f = Fixture::new();
    let limits = Limits {
        max_connections: 3,
        head: Duration::from_secs(2),
        idle: Duration::from_secs(3),
        ..Limits::default()
    };
    let (server, log, rx) = serve(&f.tree, limits);
    let addr = server.addr();
    // Every slot taken by a client that keeps its head coming, byte by byte,
    // faster than any per-read timeout.
    let slow: Vec<_> = (0..3)
        .map(|_| slowloris(addr, Duration::from_millis(200)))
        .collect();
    // Each is cut off by the whole-head deadline with a 408.
    for _ in 0..3 {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a 408 line");
        assert_eq!(line.status, 408, "{line}");
    }
    for client in slow {
        let ran = client.join().unwrap();
        assert!(ran >= limits.head, "cut off too early: {ran:?}");
        assert!(
            // Slack for a loaded machine; the point is that the slot is
            // freed, not the exact moment.
            ran < limits.head + Duration::from_secs(15),
            "held a slot for {ran:?}"
        );
    }
    // A good client gets a slot and its answer.
    let response = exchange(
        addr,
        b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(statuses(&response), ["200"], "{response}");
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|l| l.target == "/health" && l.status == 200)
    );

    // A client that connects and says nothing is closed after `idle`.
    let started = Instant::now();
    let mut silent = TcpStream::connect(addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 16];
    let n = silent.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a silent client gets no response, only the close");
    let waited = started.elapsed();
    assert!(
        waited >= limits.idle && waited < limits.idle + Duration::from_secs(15),
        "{waited:?}"
    );
}

#[test]
fn a_client_that_does_not_read_its_response_is_cut_off() {
    let f = Fixture::new();
    // Larger than loopback socket buffers can absorb, so the server's writes
    // block on the client.
    let big = f.tree.join("blobs/sha256/big");
    std::fs::write(&big, vec![0u8; 48 << 20]).unwrap();
    let limits = Limits {
        max_connections: 2,
        idle: Duration::from_secs(1),
        min_rate: 16 << 20,
        ..Limits::default()
    };
    let (server, _, rx) = serve(&f.tree, limits);
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .write_all(b"GET /blobs/sha256/big HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    // The request is logged, then (1 s + 48 MiB at 16 MiB/s = 4 s later) the
    // aborted send.
    let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((first.status, first.aborted), (200, false), "{first}");
    let aborted = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("an aborted line");
    assert!(aborted.aborted, "{aborted}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(12),
        "{took:?}"
    );
    // What reached the client is less than promised, then the end.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    assert!(got.len() < 48 << 20, "{} bytes", got.len());
}

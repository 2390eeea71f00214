//! `phase serve` as a provider: HTTP behaviour request by request, then
//! `phase verify --artifacts` against it over HTTP and HTTPS, then hostile
//! mirrors the client must refuse (SECURITY.md rows 9 and 12).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use common::{Fixture, KERNEL_SIZE, assert_ranged};
use phase_tools::serve::{RequestLog, Server, ServerHandle, TlsFiles};
use phase_tools::testca::TestCa;

fn serve(root: &Path, tls: Option<&TlsFiles>) -> (ServerHandle, Arc<Mutex<Vec<RequestLog>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    let server = Server::bind(
        root,
        "127.0.0.1:0".parse().unwrap(),
        tls,
        Arc::new(move |line: &RequestLog| sink.lock().unwrap().push(line.clone())),
    )
    .unwrap();
    (server.spawn(), log)
}

/// One raw exchange: sends `request` as is, reads until the server closes.
fn exchange(addr: SocketAddr, request: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8(raw[..head_end].to_vec()).unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, raw[head_end..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn serve_answers_each_request_as_http_says() {
    let f = Fixture::new();
    let kernel = std::fs::read(f.input("vmlinuz")).unwrap();
    let blob = format!("/blobs/sha256/{}", sha256_hex(&kernel));
    let manifest = std::fs::read(f.manifest()).unwrap();
    // A symlink that would lead out of the tree.
    std::os::unix::fs::symlink(&f.key, f.tree.join("escape")).unwrap();
    let (server, log) = serve(&f.tree, None);
    let get = |target: &str, extra: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n")
    };
    let n = KERNEL_SIZE;
    type Case = (String, u16, Option<(&'static str, String)>, Option<Vec<u8>>);
    let table: Vec<Case> = vec![
        (get("/health", ""), 200, None, Some(b"ok\n".to_vec())),
        (
            get("/stable/aarch64/manifest.json", ""),
            200,
            Some(("cache-control", "no-cache".into())),
            Some(manifest.clone()),
        ),
        (
            get(&blob, "Range: bytes=0-9\r\n"),
            206,
            Some(("content-range", format!("bytes 0-9/{n}"))),
            Some(kernel[..10].to_vec()),
        ),
        (
            get(&blob, "Range: bytes=-5\r\n"),
            206,
            Some(("content-range", format!("bytes {}-{}/{n}", n - 5, n - 1))),
            Some(kernel[n - 5..].to_vec()),
        ),
        (
            get(&blob, "Range: bytes=299990-\r\n"),
            206,
            Some((
                "cache-control",
                "public, max-age=31536000, immutable".into(),
            )),
            Some(kernel[299_990..].to_vec()),
        ),
        (
            get(&blob, &format!("Range: bytes={n}-\r\n")),
            416,
            Some(("content-range", format!("bytes */{n}"))),
            None,
        ),
        (
            get(&blob, "Range: bytes=0-1,5-6\r\n"),
            200,
            Some(("accept-ranges", "bytes".into())),
            Some(kernel.clone()),
        ),
        (
            "HEAD /stable/aarch64/manifest.json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                .into(),
            200,
            Some(("content-length", manifest.len().to_string())),
            Some(Vec::new()),
        ),
        (
            "POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .into(),
            405,
            Some(("allow", "GET, HEAD".into())),
            None,
        ),
        (get("/../keys/phase.key", ""), 404, None, None),
        (
            get("/stable/%2e%2e/aarch64/manifest.json", ""),
            404,
            None,
            None,
        ),
        (get("/stable/aarch64/", ""), 404, None, None),
        (get("/stable", ""), 404, None, None),
        (get("/escape", ""), 404, None, None),
        (
            "GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello".into(),
            400,
            None,
            None,
        ),
        ("HELLO\r\n\r\n".into(), 400, None, None),
    ];
    for (request, status, expected_header, body) in &table {
        let (got, headers, got_body) = exchange(server.addr(), request);
        assert_eq!(got, *status, "{request:?}");
        if let Some((name, value)) = expected_header {
            assert_eq!(header(&headers, name), Some(value.as_str()), "{request:?}");
        }
        if let Some(body) = body {
            assert!(got_body == *body, "{request:?}: body differs");
        }
    }
    // One log line per request, in order, with the range asked for.
    let log = log.lock().unwrap();
    assert_eq!(log.len(), table.len());
    let ranged = &log[2];
    assert_eq!(
        (ranged.status, ranged.bytes, ranged.range.as_deref()),
        (206, 10, Some("bytes=0-9"))
    );
    assert!(
        ranged.to_string().ends_with("206 10 range=bytes=0-9"),
        "{ranged}"
    );
}

#[test]
fn serve_keeps_a_connection_alive_between_requests() {
    let f = Fixture::new();
    let (server, log) = serve(&f.tree, None);
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    // Two requests pipelined on one connection; the second closes it.
    stream
        .write_all(
            b"GET /health HTTP/1.1\r\nHost: t\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    assert_eq!(raw.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{raw}");
    assert!(raw.contains("Connection: keep-alive\r\n"), "{raw}");
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].peer, log[1].peer);
}

#[test]
fn verify_passes_against_phase_serve_over_http_and_https() {
    let f = Fixture::new();
    let ca = TestCa::new(f.dir.path()).unwrap();
    let tls = TlsFiles {
        cert: ca.cert.clone(),
        key: ca.key.clone(),
    };
    for tls in [None, Some(&tls)] {
        let (server, log) = serve(&f.tree, tls);
        let url = format!("{}stable/aarch64/manifest.json", server.url());
        let chunk = 65_536;
        let (passed, report) = f.verify(
            &url,
            &[
                "--chunk-size",
                &chunk.to_string(),
                "--ca",
                ca.ca.to_str().unwrap(),
            ],
        );
        assert!(passed, "{url}: {report}");
        assert_ranged(&report, chunk);
        let log = log.lock().unwrap();
        let partial = log.iter().filter(|l| l.status == 206).count();
        assert_eq!(partial, 5 + 2 + 1, "{url}: {log:?}");
    }
}

#[test]
fn https_needs_the_ca_and_refuses_a_downgrade() {
    let f = Fixture::new();
    let ca = TestCa::new(f.dir.path()).unwrap();
    let tls = TlsFiles {
        cert: ca.cert.clone(),
        key: ca.key.clone(),
    };
    let (server, _log) = serve(&f.tree, Some(&tls));
    let url = format!("{}stable/aarch64/manifest.json", server.url());
    // Without the test CA the web roots do not know the certificate.
    let (passed, report) = f.verify(&url, &[]);
    assert!(!passed);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("GET {url}: ")),
        "{report}"
    );
    // A mirror that redirects an https request to plain http is refused,
    // though the http side would serve the manifest.
    let plain = serve(&f.tree, None).0;
    let downgrade = Hostile::start_tls(
        |_, s| {
            let location = DOWNGRADE_TO.lock().unwrap().clone();
            let _ = s.write_all(
                format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n")
                    .as_bytes(),
            );
        },
        &tls,
    );
    *DOWNGRADE_TO.lock().unwrap() = format!("{}stable/aarch64/manifest.json", plain.url());
    let https_url = format!("https://{}/stable/aarch64/manifest.json", downgrade.addr);
    let (passed, report) = f.verify(&https_url, &["--ca", ca.ca.to_str().unwrap()]);
    assert!(!passed);
    let error = report["error"].as_str().unwrap();
    assert!(
        error.ends_with(&format!(
            "redirect to {} refused: https never downgrades to http",
            DOWNGRADE_TO.lock().unwrap()
        )),
        "{error}"
    );
    // The same redirect target is fine when asked for directly.
    assert!(f.verify(&DOWNGRADE_TO.lock().unwrap().clone(), &[]).0);
}

static DOWNGRADE_TO: Mutex<String> = Mutex::new(String::new());

#[test]
fn phase_serve_binary_serves_what_verify_accepts() {
    let f = Fixture::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_phase"))
        .args(["serve", f.tree.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first line is printed once the socket listens: no polling.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{first}");
    let (passed, report) = f.verify(
        &format!("{url}stable/aarch64/manifest.json"),
        &["--chunk-size", "100000"],
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(passed, "{report}");
    assert_ranged(&report, 100_000);
    assert_eq!(
        log.lines().filter(|l| l.contains("\" 206 ")).count(),
        4 + 1 + 1,
        "{log}"
    );
    assert!(log.contains("range=bytes=300000-300000"), "{log}");
}

#[test]
fn verify_refuses_a_mirror_serving_a_tampered_blob() {
    let f = Fixture::new();
    let kernel = std::fs::read(f.input("vmlinuz")).unwrap();
    let blob = f.tree.join("blobs/sha256").join(sha256_hex(&kernel));
    let mut tampered = kernel.clone();
    tampered[123_456] ^= 0x01;
    std::fs::write(&blob, &tampered).unwrap();
    let (server, _log) = serve(&f.tree, None);
    let url = format!("{}stable/aarch64/manifest.json", server.url());
    let (passed, report) = f.verify(&url, &["--chunk-size", "65536"]);
    assert!(!passed);
    let error = report["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("kernel {}blobs/sha256/", server.url())),
        "{error}"
    );
    assert!(error.contains("sha256 is "), "{error}");
}

/// A mirror that answers every request with `handler`, on loopback, one
/// request per connection (handlers say `Connection: close`).
struct Hostile {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

type Handler = fn(&str, &mut dyn Write);

impl Hostile {
    fn start(handler: Handler) -> Hostile {
        Hostile::spawn(handler, None)
    }

    fn start_tls(handler: Handler, files: &TlsFiles) -> Hostile {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(&files.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        Hostile::spawn(handler, Some(Arc::new(config)))
    }

    fn spawn(handler: Handler, tls: Option<Arc<rustls::ServerConfig>>) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let tls = tls.clone();
                thread::spawn(move || match tls {
                    Some(config) => {
                        let conn = rustls::ServerConnection::new(config).unwrap();
                        let mut tls = rustls::StreamOwned::new(conn, stream);
                        answer(&mut tls, handler);
                        tls.conn.send_close_notify();
                        let _ = tls.flush();
                    }
                    None => answer(&mut { stream }, handler),
                });
            }
        });
        Hostile {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/stable/aarch64/manifest.json", self.addr)
    }
}

/// Reads one request head and lets `handler` answer it.
fn answer(stream: &mut (impl Read + Write), handler: Handler) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.split(' ').nth(1).unwrap_or("").to_owned();
    handler(&target, stream);
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The fixture's manifest, for hostile mirrors that serve it correctly and
/// lie about the artifacts.
static MANIFEST: Mutex<Vec<u8>> = Mutex::new(Vec::new());

#[test]
fn verify_refuses_hostile_mirrors_within_its_caps() {
    let f = Fixture::new();
    *MANIFEST.lock().unwrap() = std::fs::read(f.manifest()).unwrap();
    let cases: Vec<(Handler, &str)> = vec![
        // Row 9: an endless chunked body where the manifest should be.
        (
            |_, s| {
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
                );
                let chunk = format!("{:x}\r\n{}\r\n", 4096, " ".repeat(4096));
                while s.write_all(chunk.as_bytes()).is_ok() {}
            },
            "the body is longer than the 65536-byte cap",
        ),
        // Row 9: a Content-Length far larger than the cap.
        (
            |_, s| {
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1000000000\r\n\r\n",
                );
                while s.write_all(&[b' '; 4096]).is_ok() {}
            },
            "longer than the 65536-byte cap",
        ),
        // Row 12: content decoding would hash other bytes than were served.
        (
            |_, s| {
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}",
                );
            },
            "Content-Encoding \"gzip\" refused; artifacts are hashed exactly as stored",
        ),
        // Row 12: a redirect loop.
        (
            |target, s| {
                let _ = s.write_all(
                    format!(
                        "HTTP/1.1 302 Found\r\nConnection: close\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n"
                    )
                    .as_bytes(),
                );
            },
            "more than 5 redirects",
        ),
        // Row 9: the artifact body goes on past the declared size while the
        // server ignores Range.
        (
            |target, s| {
                if target.ends_with("manifest.json") {
                    let m = MANIFEST.lock().unwrap().clone();
                    let _ = s.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                            m.len()
                        )
                        .as_bytes(),
                    );
                    let _ = s.write_all(&m);
                } else {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n");
                    let chunk = format!("{:x}\r\n{}\r\n", 4096, "x".repeat(4096));
                    while s.write_all(chunk.as_bytes()).is_ok() {}
                }
            },
            "the body is longer than the 300001-byte cap",
        ),
        // A 206 whose Content-Range is not the range asked for.
        (
            |target, s| {
                if target.ends_with("manifest.json") {
                    let m = MANIFEST.lock().unwrap().clone();
                    let _ = s.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                            m.len()
                        )
                        .as_bytes(),
                    );
                    let _ = s.write_all(&m);
                } else {
                    let _ = s.write_all(
                        b"HTTP/1.1 206 Partial Content\r\nConnection: close\r\nContent-Range: bytes 0-9/10\r\nContent-Length: 10\r\n\r\n0123456789",
                    );
                }
            },
            "Content-Range is Some(\"bytes 0-9/10\")",
        ),
    ];
    for (handler, expected) in cases {
        let mirror = Hostile::start(handler);
        let (passed, report) =
            f.verify(&mirror.url(), &["--channel", "stable", "--arch", "aarch64"]);
        assert!(!passed, "{report}");
        let error = report["error"].as_str().unwrap();
        assert!(error.contains(expected), "{error:?} lacks {expected:?}");
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    phase_manifest::encoding::hex(&Sha256::digest(bytes))
}

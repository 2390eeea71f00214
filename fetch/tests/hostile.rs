//! The client against misbehaving servers on loopback: every transport attack
//! of SECURITY.md rows 9–12 is refused, within its cap and its deadline. The
//! servers misbehave on purpose (they stall, trickle, lie about lengths,
//! redirect in loops or downgrade); the client must give up by itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use phase_fetch::{Client, Config, FetchError, MinRate, Roots};

/// What the server saw of a request.
struct Request {
    path: String,
    range: Option<String>,
}

type Handler = Arc<dyn Fn(&Request, &mut dyn Write) + Send + Sync>;

/// A loopback server, plain or TLS, answering every connection with `handler`.
struct Server {
    url: String,
}

fn read_request(stream: &mut impl std::io::Read) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_owned());
        }
    }
    Some(Request { path, range })
}

impl Server {
    fn plain(handler: Handler) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let handler = handler.clone();
                std::thread::spawn(move || serve_plain(stream, &handler));
            }
        });
        Server { url }
    }

    fn tls(handler: Handler, pki: &Pki) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "https://localhost:{}",
            listener.local_addr().unwrap().port()
        );
        let config = pki.server_config();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let handler = handler.clone();
                let config = config.clone();
                std::thread::spawn(move || {
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(conn, stream);
                    if let Some(request) = read_request(&mut tls) {
                        handler(&request, &mut tls);
                        let _ = tls.flush();
                        tls.conn.send_close_notify();
                        let _ = tls.flush();
                    }
                });
            }
        });
        Server { url }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

fn serve_plain(mut stream: TcpStream, handler: &Handler) {
    if let Some(request) = read_request(&mut stream) {
        handler(&request, &mut stream);
        let _ = stream.flush();
    }
}

fn respond(out: &mut dyn Write, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(body);
}

fn ok_body(body: &'static [u8]) -> Handler {
    Arc::new(move |_r, out| {
        respond(
            out,
            "200 OK",
            &[("Content-Length", body.len().to_string())],
            body,
        )
    })
}

/// A CA made by the test, and a leaf for localhost signed by it.
struct Pki {
    ca_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "phase test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        Pki {
            ca_pem: ca.pem(),
            cert_der: leaf.der().to_vec(),
            key_der: leaf_key.serialize_der(),
        }
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert_der.clone().into()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into()),
            )
            .unwrap();
        Arc::new(config)
    }
}

/// A client with short deadlines, so the tests take seconds; the rules are
/// the same as the defaults.
fn client(roots: Option<&Pki>) -> Client {
    let pem = roots.map_or_else(|| Pki::new().ca_pem, |p| p.ca_pem.clone());
    let mut config = Config::new(Roots::Pem(pem.into_bytes()));
    config.connect = Duration::from_secs(2);
    config.first_byte = Duration::from_secs(1);
    config.stall = Duration::from_secs(1);
    config.min_rate = Some(MinRate {
        bytes: 1000,
        per: Duration::from_secs(1),
    });
    Client::new(config).unwrap()
}

fn collect(
    client: &Client,
    url: &str,
    size: u64,
    chunk: Option<u64>,
) -> (Result<phase_fetch::Transfer, FetchError>, Vec<u8>) {
    let mut got = Vec::new();
    let result = client.get_to(
        url,
        0,
        size,
        chunk,
        &mut |b| {
            got.extend_from_slice(b);
            Ok(())
        },
        &mut |_| {},
    );
    (result, got)
}

#[test]
fn a_plain_body_comes_through() {
    let server = Server::plain(ok_body(b"manifest"));
    assert_eq!(
        client(None).get_capped(&server.url("/m"), 100).unwrap(),
        b"manifest"
    );
}

#[test]
fn row9_an_endless_body_stops_at_the_cap() {
    const CAP: u64 = 64 << 10;
    // Chunked encoding, for 400 MB: endless for any client that trusts it.
    let server = Server::plain(Arc::new(|_r, out| {
        let _ = out.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        let chunk = format!("{:x}\r\n{}\r\n", 4096, "a".repeat(4096));
        for _ in 0..100_000 {
            if out.write_all(chunk.as_bytes()).is_err() {
                return;
            }
        }
    }));
    // A naive client — read the response until the server stops — is only
    // stopped by the bound this test gives it (16 times the cap): it took
    // every byte offered, far past the cap.
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut naive = TcpStream::connect(&addr).unwrap();
    naive
        .write_all(format!("GET /m HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    let mut taken = Vec::new();
    naive.take(16 * CAP).read_to_end(&mut taken).unwrap();
    assert_eq!(
        taken.len() as u64,
        16 * CAP,
        "the naive client stopped early"
    );
    // Ours, on the same server: an error at the cap.
    let err = client(None).get_capped(&server.url("/m"), CAP).unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { cap: 65536, .. }),
        "{err}"
    );
}

#[test]
fn row9_a_lying_content_length_is_an_error() {
    // Claims 1000 bytes, sends 10, closes.
    let server = Server::plain(Arc::new(|_r, out| {
        respond(
            out,
            "200 OK",
            &[("Content-Length", "1000".into())],
            b"0123456789",
        );
    }));
    let err = client(None)
        .get_capped(&server.url("/m"), 4096)
        .unwrap_err();
    assert!(matches!(err, FetchError::Read { .. }), "{err}");
    let (result, got) = collect(&client(None), &server.url("/a"), 1000, None);
    assert!(
        matches!(
            result,
            Err(FetchError::Read { .. } | FetchError::Truncated { .. })
        ),
        "{result:?}"
    );
    assert_eq!(got.len(), 10);
}

#[test]
fn row9_an_artifact_longer_than_declared_is_cut_at_its_size() {
    let server = Server::plain(ok_body(b"0123456789abcdefghij"));
    let (result, got) = collect(&client(None), &server.url("/a"), 10, None);
    assert!(
        matches!(result, Err(FetchError::TooLarge { cap: 10, .. })),
        "{result:?}"
    );
    assert_eq!(
        got, b"0123456789",
        "the sink saw more than the declared size"
    );
}

#[test]
fn row10_a_slow_first_byte_is_dropped_at_its_deadline() {
    let server = Server::plain(Arc::new(|_r, out| {
        std::thread::sleep(Duration::from_secs(5));
        respond(out, "200 OK", &[("Content-Length", "2".into())], b"ok");
    }));
    let started = Instant::now();
    let err = client(None).get_capped(&server.url("/m"), 100).unwrap_err();
    assert!(matches!(err, FetchError::Request { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the first-byte deadline did not hold"
    );
}

#[test]
fn row10_a_trickle_is_dropped_below_the_minimum_rate() {
    let server = Server::plain(Arc::new(|_r, out| {
        let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
        for _ in 0..100_000 {
            if out.write_all(b"x").and_then(|()| out.flush()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }));
    let started = Instant::now();
    let (result, _) = collect(&client(None), &server.url("/a"), 100_000, None);
    assert!(
        matches!(result, Err(FetchError::TooSlow { .. })),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the trickle was not dropped in budget"
    );
}

#[test]
fn row10_a_stalled_body_is_dropped() {
    let server = Server::plain(Arc::new(|_r, out| {
        let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc");
        let _ = out.flush();
        std::thread::sleep(Duration::from_secs(10));
    }));
    let started = Instant::now();
    let (result, got) = collect(&client(None), &server.url("/a"), 100, None);
    let err = result.expect_err("a stalled body was accepted");
    // Named for the deadline that ended it, as a report shows it.
    assert!(matches!(err, FetchError::Read { .. }), "{err}");
    assert_eq!(err.kind(), "timed_out", "{err:#}");
    assert_eq!(got, b"abc");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the stall deadline did not hold"
    );
}

#[test]
fn row12_a_redirect_loop_ends_at_the_limit() {
    let server = Server::plain(Arc::new(|r, out| {
        respond(
            out,
            "302 Found",
            &[("Location", r.path.clone()), ("Content-Length", "0".into())],
            b"",
        );
    }));
    let err = client(None)
        .get_capped(&server.url("/loop"), 100)
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Redirects { limit: 5, .. }),
        "{err}"
    );
}

#[test]
fn row12_redirects_are_followed_but_never_from_https_to_http() {
    let pki = Pki::new();
    let plain = Server::plain(ok_body(b"from plain http"));
    let target = plain.url("/m");
    let https = Server::tls(
        Arc::new(move |_r, out| {
            respond(
                out,
                "302 Found",
                &[("Location", target.clone()), ("Content-Length", "0".into())],
                b"",
            );
        }),
        &pki,
    );
    let err = client(Some(&pki))
        .get_capped(&https.url("/m"), 100)
        .unwrap_err();
    assert!(matches!(err, FetchError::Downgrade { .. }), "{err}");

    // http → https is an upgrade, and a relative Location resolves.
    let secure = Server::tls(ok_body(b"over tls"), &pki);
    let secure_url = secure.url("/final");
    let hop = Server::plain(Arc::new(move |r, out| {
        let location = if r.path == "/start" {
            "/next".to_owned()
        } else {
            secure_url.clone()
        };
        respond(
            out,
            "301 Moved",
            &[("Location", location), ("Content-Length", "0".into())],
            b"",
        );
    }));
    assert_eq!(
        client(Some(&pki))
            .get_capped(&hop.url("/start"), 100)
            .unwrap(),
        b"over tls"
    );
}

#[test]
fn row12_https_needs_a_trusted_ca() {
    let pki = Pki::new();
    let server = Server::tls(ok_body(b"secret"), &pki);
    // A client trusting another CA refuses the handshake.
    let err = client(None).get_capped(&server.url("/m"), 100).unwrap_err();
    assert!(matches!(err, FetchError::Request { .. }), "{err}");
    assert_eq!(
        client(Some(&pki))
            .get_capped(&server.url("/m"), 100)
            .unwrap(),
        b"secret"
    );
}

#[test]
fn row12_content_encoding_is_refused_not_decoded() {
    let server = Server::plain(Arc::new(|_r, out| {
        respond(
            out,
            "200 OK",
            &[
                ("Content-Encoding", "gzip".into()),
                ("Content-Length", "4".into()),
            ],
            b"\x1f\x8b\x08\x00",
        );
    }));
    let err = client(None).get_capped(&server.url("/m"), 100).unwrap_err();
    assert!(matches!(err, FetchError::ContentEncoding { .. }), "{err}");
}

/// A server that honours Range correctly, or gets it wrong in one of the ways
/// a broken mirror does.
fn ranged(body: &'static [u8], mode: &'static str) -> Handler {
    Arc::new(move |r, out| {
        let Some(range) = r.range.as_deref().and_then(|v| v.strip_prefix("bytes=")) else {
            respond(
                out,
                "200 OK",
                &[("Content-Length", body.len().to_string())],
                body,
            );
            return;
        };
        let (a, b) = range.split_once('-').unwrap();
        let a: usize = a.parse().unwrap();
        let b: usize = if b.is_empty() {
            body.len() - 1
        } else {
            b.parse().unwrap()
        };
        match mode {
            "ignore" => respond(
                out,
                "200 OK",
                &[("Content-Length", body.len().to_string())],
                body,
            ),
            "shift" => {
                let part = &body[a + 1..=b.min(body.len() - 2) + 1];
                let cr = format!("bytes {}-{}/{}", a + 1, b + 1, body.len());
                respond(
                    out,
                    "206 Partial Content",
                    &[
                        ("Content-Range", cr),
                        ("Content-Length", part.len().to_string()),
                    ],
                    part,
                );
            }
            _ => {
                let part = &body[a..=b];
                let cr = format!("bytes {a}-{b}/{}", body.len());
                respond(
                    out,
                    "206 Partial Content",
                    &[
                        ("Content-Range", cr),
                        ("Content-Length", part.len().to_string()),
                    ],
                    part,
                );
            }
        }
    })
}

#[test]
fn ranged_transfers_and_resumes() {
    const BODY: &[u8] = b"the quick brown fox jumps over the lazy dog";
    let size = BODY.len() as u64;
    let good = Server::plain(ranged(BODY, "good"));
    let (result, got) = collect(&client(None), &good.url("/a"), size, Some(10));
    let transfer = result.unwrap();
    assert_eq!(
        (got.as_slice(), transfer.requests, transfer.ranged),
        (BODY, 5, true)
    );

    // Resuming from an offset asks for the rest only.
    let mut rest = Vec::new();
    client(None)
        .get_to(
            &good.url("/a"),
            20,
            size,
            None,
            &mut |b| {
                rest.extend_from_slice(b);
                Ok(())
            },
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(rest, &BODY[20..]);

    // A server that ignores Range is fine from byte 0, not for a resume.
    let ignoring = Server::plain(ranged(BODY, "ignore"));
    let (result, got) = collect(&client(None), &ignoring.url("/a"), size, Some(10));
    assert_eq!((got.as_slice(), result.unwrap().ranged), (BODY, false));
    let err = client(None)
        .get_to(
            &ignoring.url("/a"),
            20,
            size,
            None,
            &mut |_| Ok(()),
            &mut |_| {},
        )
        .unwrap_err();
    assert!(matches!(err, FetchError::RangeIgnored { .. }), "{err}");

    // A wrong Content-Range is refused before its bytes are used.
    let shifting = Server::plain(ranged(BODY, "shift"));
    let (result, got) = collect(&client(None), &shifting.url("/a"), size, Some(10));
    assert!(
        matches!(result, Err(FetchError::ContentRange { .. })),
        "{result:?}"
    );
    assert!(got.is_empty());
}

#[test]
fn status_errors_and_refused_bytes_name_the_url() {
    let server = Server::plain(Arc::new(|_r, out| {
        respond(out, "404 Not Found", &[("Content-Length", "0".into())], b"")
    }));
    let err = client(None)
        .get_capped(&server.url("/stable/x86_64/manifest.json"), 100)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "GET {}: HTTP 404",
            server.url("/stable/x86_64/manifest.json")
        )
    );

    let good = Server::plain(ok_body(b"0123456789"));
    let err = client(None)
        .get_to(
            &good.url("/a"),
            0,
            10,
            None,
            &mut |_| Err("hash mismatch".into()),
            &mut |_| {},
        )
        .unwrap_err();
    assert!(matches!(err, FetchError::Sink { .. }), "{err}");
}

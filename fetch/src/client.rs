//! One HTTP(S) client with a booting machine's rules; see the crate docs.

use std::error::Error as StdError;
use std::io::{self, Read};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use thiserror::Error;
use ureq::http::Response;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};
use ureq::{Agent, Body};

use crate::url::resolve;

/// Which certificate authorities HTTPS trusts.
#[derive(Debug, Clone)]
pub enum Roots {
    /// PEM certificates: the bundle an image carries, or a pinned CA.
    Pem(Vec<u8>),
    /// Mozilla's roots (host tools only; needs the `webpki-roots` feature).
    #[cfg(feature = "webpki-roots")]
    WebPki,
}

/// At least `bytes` in every window of `per`, or the transfer is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    pub bytes: u64,
    pub per: Duration,
}

/// Deadlines and limits.
#[derive(Debug, Clone)]
pub struct Config {
    pub roots: Roots,
    /// TCP connect (and name resolution).
    pub connect: Duration,
    /// From sending the request to the response headers. ureq bounds every
    /// read by `stall` as well, the head's included, so a server silent
    /// before its head is dropped after the shorter of the two.
    pub first_byte: Duration,
    /// Longest silence between two reads of the body (and of the head).
    pub stall: Duration,
    pub min_rate: Option<MinRate>,
    pub max_redirects: u32,
    pub user_agent: String,
}

impl Config {
    /// Defaults for a booting machine: 10 s to connect, 20 s to the first
    /// byte, 10 s of silence, at least 64 KiB in every 10 s, 5 redirects.
    pub fn new(roots: Roots) -> Config {
        Config {
            roots,
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(20),
            stall: Duration::from_secs(10),
            min_rate: Some(MinRate {
                bytes: 64 << 10,
                per: Duration::from_secs(10),
            }),
            max_redirects: 5,
            user_agent: concat!("phase-boot/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

type SinkError = Box<dyn StdError + Send + Sync>;

#[derive(Debug, Error)]
pub enum FetchError {
    #[error("reading the CA certificates")]
    Ca(#[source] ureq::Error),
    #[error("the CA bundle holds no PEM certificate")]
    NoCa,
    #[error("GET {url}")]
    Request {
        url: String,
        #[source]
        source: ureq::Error,
    },
    #[error("GET {url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: more than {limit} redirects")]
    Redirects { url: String, limit: u32 },
    #[error("GET {url}: redirect to {location:?} refused (not an http(s) URL)")]
    BadRedirect { url: String, location: String },
    #[error("GET {from}: redirect to {to} refused: https never downgrades to http")]
    Downgrade { from: String, to: String },
    #[error(
        "GET {url}: Content-Encoding {encoding:?} refused; artifacts are hashed exactly as stored"
    )]
    ContentEncoding { url: String, encoding: String },
    #[error("GET {url} with Range {asked}: Content-Range is {got:?}")]
    ContentRange {
        url: String,
        asked: String,
        got: Option<String>,
    },
    #[error("GET {url} with Range {asked}: the server ignored the range")]
    RangeIgnored { url: String, asked: String },
    #[error("GET {url}: the body ended after {got} of {expected} bytes")]
    Truncated {
        url: String,
        got: u64,
        expected: u64,
    },
    #[error("GET {url}: the body is longer than the {cap}-byte cap")]
    TooLarge { url: String, cap: u64 },
    #[error("GET {url}: {bytes} bytes in {} ms, below the minimum of {} bytes per {} s", elapsed.as_millis(), min.bytes, min.per.as_secs())]
    TooSlow {
        url: String,
        bytes: u64,
        elapsed: Duration,
        min: MinRate,
    },
    #[error("GET {url}: reading the body")]
    Read {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("GET {url}: the bytes were refused")]
    Sink {
        url: String,
        #[source]
        source: SinkError,
    },
}

impl FetchError {
    /// A stable snake-case name for what went wrong, for failure events and
    /// tests: the variant, and for a failed request what failed under it
    /// (`connection_refused`, `timed_out`, `host_not_found`, `tls`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Ca(_) => "ca",
            FetchError::NoCa => "no_ca",
            FetchError::Request { source, .. } => request_kind(source),
            FetchError::Status { .. } => "status",
            FetchError::Redirects { .. } => "redirects",
            FetchError::BadRedirect { .. } => "bad_redirect",
            FetchError::Downgrade { .. } => "downgrade",
            FetchError::ContentEncoding { .. } => "content_encoding",
            FetchError::ContentRange { .. } => "content_range",
            FetchError::RangeIgnored { .. } => "range_ignored",
            FetchError::Truncated { .. } => "truncated",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::TooSlow { .. } => "too_slow",
            // ureq reports its own failures while reading a body (a read
            // deadline) as an io::Error wrapping a ureq::Error.
            FetchError::Read { source, .. } => io_kind(source)
                .or_else(|| {
                    source
                        .get_ref()
                        .and_then(|e| e.downcast_ref::<ureq::Error>())
                        .map(request_kind)
                })
                .unwrap_or("read"),
            FetchError::Sink { .. } => "sink",
        }
    }
}

fn request_kind(error: &ureq::Error) -> &'static str {
    match error {
        ureq::Error::Io(e) => io_kind(e).unwrap_or("io"),
        ureq::Error::Timeout(_) => "timed_out",
        ureq::Error::HostNotFound => "host_not_found",
        ureq::Error::ConnectionFailed => "connection_failed",
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::TlsRequired => "tls",
        ureq::Error::Protocol(_) => "protocol",
        ureq::Error::LargeResponseHeader(..) => "response_header_too_large",
        _ => "request",
    }
}

fn io_kind(error: &io::Error) -> Option<&'static str> {
    Some(match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection_refused",
        io::ErrorKind::ConnectionReset => "connection_reset",
        io::ErrorKind::ConnectionAborted => "connection_aborted",
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed_out",
        io::ErrorKind::UnexpectedEof => "unexpected_eof",
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => "unreachable",
        _ => return None,
    })
}

/// What a transfer took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The URL the bytes came from, after redirects.
    pub url: String,
    pub requests: u32,
    /// Whether the server answered with byte ranges.
    pub ranged: bool,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// rustls' *ring* provider — every cipher suite, key-exchange group and
/// signature algorithm it has — without its key provider: a provider is
/// never asked for a client certificate, and the key provider would link
/// *ring*'s RSA, ECDSA and Ed25519 signing code into the init for nothing.
fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::CryptoProvider {
        key_provider: &NoClientKeys,
        ..rustls::crypto::ring::default_provider()
    }
}

/// Refuses every private key: the client authenticates no one.
#[derive(Debug)]
struct NoClientKeys;

impl rustls::crypto::KeyProvider for NoClientKeys {
    fn load_private_key(
        &self,
        _key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        Err(rustls::Error::General(
            "client certificates are not supported".into(),
        ))
    }
}

/// The roots HTTPS trusts, parsed.
fn roots(roots: &Roots) -> Result<RootCerts, FetchError> {
    match roots {
        Roots::Pem(pem) => {
            let certs = ureq::tls::parse_pem(pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<Certificate<'static>>, _>>()
                .map_err(FetchError::Ca)?;
            if certs.is_empty() {
                return Err(FetchError::NoCa);
            }
            Ok(RootCerts::Specific(Arc::new(certs)))
        }
        #[cfg(feature = "webpki-roots")]
        Roots::WebPki => Ok(RootCerts::WebPki),
    }
}

/// An agent under the rules, trusting `roots` for HTTPS.
fn agent(config: &Config, roots: RootCerts) -> Agent {
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(crypto_provider()))
        .root_certs(roots)
        .build();
    Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        // Redirects are followed by hand, to refuse downgrades.
        .max_redirects(0)
        .max_redirects_will_error(false)
        .accept_encoding("identity")
        .user_agent(config.user_agent.as_str())
        .timeout_connect(Some(config.connect))
        .timeout_resolve(Some(config.connect))
        .timeout_recv_response(Some(config.first_byte))
        .timeout_per_read(Some(config.stall))
        .build()
        .new_agent()
}

/// See the crate docs.
///
/// Plain-HTTP requests use an agent that trusts nothing; the HTTPS agent,
/// with the roots parsed from [`Config::roots`], is made at the first
/// `https://` request. A booting machine whose providers are all plain
/// HTTP (their manifests are signed either way) never parses the image's
/// CA bundle, 225 KB of PEM that took 14–24 ms under TCG at every boot.
pub struct Client {
    plain: Agent,
    tls: OnceLock<Agent>,
    config: Config,
}

impl Client {
    pub fn new(config: Config) -> Result<Client, FetchError> {
        let plain = agent(&config, RootCerts::Specific(Arc::new(Vec::new())));
        Ok(Client {
            plain,
            tls: OnceLock::new(),
            config,
        })
    }

    /// The agent for `url`: the HTTPS one (made now if this is the first
    /// `https://` request) or the plain one. An unreadable CA bundle fails
    /// every HTTPS request, naming the bundle.
    fn agent(&self, url: &str) -> Result<&Agent, FetchError> {
        if !url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            return Ok(&self.plain);
        }
        if let Some(agent) = self.tls.get() {
            return Ok(agent);
        }
        let roots = roots(&self.config.roots)?;
        Ok(self.tls.get_or_init(|| agent(&self.config, roots)))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// GETs `url`, following redirects under the rules, and checks the
    /// encoding. Returns the final URL and the response.
    fn open(&self, url: &str, range: Option<&str>) -> Result<(String, Response<Body>), FetchError> {
        let mut current = url.to_owned();
        for _ in 0..=self.config.max_redirects {
            let mut request = self.agent(&current)?.get(&current);
            if let Some(range) = range {
                request = request.header("Range", range);
            }
            let response = request.call().map_err(|source| FetchError::Request {
                url: current.clone(),
                source,
            })?;
            let status = response.status().as_u16();
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                let location = header(&response, "location").unwrap_or_default();
                let next = resolve(&current, &location).ok_or_else(|| FetchError::BadRedirect {
                    url: current.clone(),
                    location: location.clone(),
                })?;
                if current.to_ascii_lowercase().starts_with("https://")
                    && next.to_ascii_lowercase().starts_with("http://")
                {
                    return Err(FetchError::Downgrade {
                        from: current,
                        to: next,
                    });
                }
                current = next;
                continue;
            }
            if let Some(encoding) = header(&response, "content-encoding")
                && !encoding.eq_ignore_ascii_case("identity")
            {
                return Err(FetchError::ContentEncoding {
                    url: current,
                    encoding,
                });
            }
            return Ok((current, response));
        }
        Err(FetchError::Redirects {
            url: url.to_owned(),
            limit: self.config.max_redirects,
        })
    }

    /// GETs `url` (status 200) and returns its body, refusing one longer than
    /// `cap`: at most `cap + 1` bytes are ever read.
    pub fn get_capped(&self, url: &str, cap: u64) -> Result<Vec<u8>, FetchError> {
        let (url, mut response) = self.open(url, None)?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(FetchError::Status { url, status });
        }
        // A declared length over the cap is refused before any byte is read.
        let declared =
            header(&response, "content-length").and_then(|l| l.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > cap) {
            return Err(FetchError::TooLarge { url, cap });
        }
        let mut reader = response.body_mut().as_reader().take(cap + 1);
        let mut body = Vec::new();
        let mut buf = vec![0u8; 16 << 10];
        let mut rate = RateGuard::new(self.config.min_rate);
        loop {
            let n = read_some(&mut reader, &mut buf, &url)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
            rate.check(n, &url)?;
        }
        if body.len() as u64 > cap {
            return Err(FetchError::TooLarge { url, cap });
        }
        Ok(body)
    }

    /// Streams bytes `start..size` of `url` into `sink`, in ranged requests of
    /// `chunk` bytes when given, else in one request (with a `Range` from
    /// `start` when resuming). Each ranged answer must be `206` with exactly
    /// the `Content-Range` asked for; a `200` is taken only for a request from
    /// byte 0. Never reads past `size`; a body that ends early is an error.
    pub fn get_to(
        &self,
        url: &str,
        start: u64,
        size: u64,
        chunk: Option<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), SinkError>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Transfer, FetchError> {
        let began = Instant::now();
        let mut offset = start;
        let mut requests = 0u32;
        let mut ranged = true;
        let mut final_url = url.to_owned();
        let mut buf = vec![0u8; 128 << 10];
        let mut rate = RateGuard::new(self.config.min_rate);
        while offset < size || (size == 0 && requests == 0) {
            // offset < size, so neither sum nor subtraction overflows.
            let end = match chunk {
                Some(c) => offset.saturating_add(c.max(1)).min(size),
                None => size,
            };
            let asked = (offset > 0 || chunk.is_some()) && end > offset;
            let range = asked.then(|| format!("bytes={offset}-{}", end - 1));
            let (at, mut response) = self.open(url, range.as_deref())?;
            requests += 1;
            final_url = at.clone();
            let status = response.status().as_u16();
            let want = match (status, &range) {
                (206, Some(asked)) => {
                    let expected = format!("bytes {offset}-{}/{size}", end - 1);
                    let got = header(&response, "content-range");
                    if got.as_deref() != Some(expected.as_str()) {
                        return Err(FetchError::ContentRange {
                            url: at,
                            asked: asked.clone(),
                            got,
                        });
                    }
                    end - offset
                }
                // A whole body is fine from the start: the caller checks it.
                (200, _) if offset == 0 => {
                    ranged = false;
                    size
                }
                (200, Some(asked)) => {
                    return Err(FetchError::RangeIgnored {
                        url: at,
                        asked: asked.clone(),
                    });
                }
                _ => return Err(FetchError::Status { url: at, status }),
            };
            // One byte more than wanted shows a body that runs long.
            let mut reader = response.body_mut().as_reader().take(want + 1);
            let mut got = 0u64;
            loop {
                let n = read_some(&mut reader, &mut buf, &at)?;
                if n == 0 {
                    break;
                }
                // n ≤ buf.len(), and got ≤ want + 1: no overflow.
                got += n as u64;
                if got > want {
                    // The sink gets what fits and never a byte past the
                    // declared size, however long the body runs.
                    let keep = n - (got - want) as usize;
                    sink(&buf[..keep]).map_err(|source| FetchError::Sink {
                        url: at.clone(),
                        source,
                    })?;
                    return Err(FetchError::TooLarge { url: at, cap: size });
                }
                sink(&buf[..n]).map_err(|source| FetchError::Sink {
                    url: at.clone(),
                    source,
                })?;
                progress(offset + got);
                rate.check(n, &at)?;
            }
            if got < want {
                return Err(FetchError::Truncated {
                    url: at,
                    got: offset + got,
                    expected: size,
                });
            }
            offset += got;
            if size == 0 {
                break;
            }
        }
        Ok(Transfer {
            url: final_url,
            requests,
            ranged,
            bytes: size - start,
            elapsed: began.elapsed(),
        })
    }
}

fn header(response: &Response<Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn read_some(reader: &mut impl Read, buf: &mut [u8], url: &str) -> Result<usize, FetchError> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => {
                return result.map_err(|source| FetchError::Read {
                    url: url.to_owned(),
                    source,
                });
            }
        }
    }
}

/// Enforces [`MinRate`] over consecutive windows of a transfer.
struct RateGuard {
    min: Option<MinRate>,
    window_start: Instant,
    window_bytes: u64,
}

impl RateGuard {
    fn new(min: Option<MinRate>) -> Self {
        RateGuard {
            min,
            window_start: Instant::now(),
            window_bytes: 0,
        }
    }

    fn check(&mut self, n: usize, url: &str) -> Result<(), FetchError> {
        let Some(min) = self.min else { return Ok(()) };
        self.window_bytes = self.window_bytes.saturating_add(n as u64);
        let elapsed = self.window_start.elapsed();
        if elapsed < min.per {
            return Ok(());
        }
        if self.window_bytes < min.bytes {
            return Err(FetchError::TooSlow {
                url: url.to_owned(),
                bytes: self.window_bytes,
                elapsed,
                min,
            });
        }
        self.window_start = Instant::now();
        self.window_bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CA bundle is read at the first HTTPS request, not before: a
    /// plain-HTTP request never needs it, an HTTPS one fails on a bad one
    /// before any connection is made.
    #[test]
    fn the_ca_bundle_is_parsed_only_for_https() {
        let client = Client::new(Config::new(Roots::Pem(b"not a certificate".to_vec())))
            .expect("a client without parsing its roots");
        // Port 1 on loopback: nothing listens, so a plain request fails in
        // the transport, never for the bundle.
        let plain = client.get_capped("http://127.0.0.1:1/x", 10).unwrap_err();
        assert!(
            matches!(plain, FetchError::Request { .. }),
            "plain HTTP: {plain:?}"
        );
        let tls = client.get_capped("https://127.0.0.1:1/x", 10).unwrap_err();
        assert!(matches!(tls, FetchError::NoCa), "HTTPS: {tls:?}");
        // An upper-case scheme is HTTPS too.
        let tls = client.get_capped("HTTPS://127.0.0.1:1/x", 10).unwrap_err();
        assert!(matches!(tls, FetchError::NoCa), "HTTPS: {tls:?}");
    }

    /// Trimming the key provider must not narrow what the client accepts
    /// from a server.
    #[test]
    fn the_provider_negotiates_as_rings_default_and_holds_no_keys() {
        let ours = crypto_provider();
        let ring = rustls::crypto::ring::default_provider();
        let suites = |p: &rustls::crypto::CryptoProvider| {
            p.cipher_suites
                .iter()
                .map(|s| s.suite())
                .collect::<Vec<_>>()
        };
        let groups = |p: &rustls::crypto::CryptoProvider| {
            p.kx_groups.iter().map(|g| g.name()).collect::<Vec<_>>()
        };
        assert_eq!(suites(&ours), suites(&ring));
        assert_eq!(groups(&ours), groups(&ring));
        assert_eq!(
            ours.signature_verification_algorithms.mapping.len(),
            ring.signature_verification_algorithms.mapping.len()
        );
        let key = rcgen::KeyPair::generate().unwrap();
        let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        assert!(ring.key_provider.load_private_key(der.clone_key()).is_ok());
        assert!(ours.key_provider.load_private_key(der).is_err());
    }
}

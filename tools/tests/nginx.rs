//! The provider tree needs no server logic: real nginx serves a tree made by
//! `phase publish`, over HTTP and over HTTPS with a CA made here, and
//! `phase verify --artifacts` passes against it with ranged requests.
//!
//! nginx gets its listening sockets from this test (the `NGINX` environment
//! variable nginx itself uses to hand sockets to a new binary on upgrade):
//! they are bound to free loopback ports and listening before nginx starts,
//! so there is neither a port race nor a wait for nginx to come up.
//!
//! Without /usr/sbin/nginx the test says so and passes, unless
//! PHASE_REQUIRE_NGINX=1 (the xtask sets it), which makes a missing nginx a
//! failure.

mod common;

use common::{Fixture, assert_ranged};
use phase_tools::nginx::{NGINX, Nginx};
use phase_tools::serve::TlsFiles;
use phase_tools::testca::TestCa;

fn nginx_present() -> bool {
    phase_testkit::file(
        NGINX,
        "nginx serves a provider tree",
        "Debian package nginx-light",
    )
    .is_some()
}

#[test]
fn verify_passes_against_nginx_over_http_and_https() {
    if !nginx_present() {
        return;
    }
    let f = Fixture::new();
    let ca = TestCa::new(f.dir.path()).unwrap();
    let run = f.dir.path().join("nginx");
    std::fs::create_dir(&run).unwrap();
    let nginx = Nginx::start(
        &f.tree,
        &TlsFiles {
            cert: ca.cert.clone(),
            key: ca.key.clone(),
        },
        &run,
    )
    .unwrap();

    let chunk = 50_000;
    for base in [
        format!("http://{}/", nginx.http),
        format!("https://{}/", nginx.https),
    ] {
        let url = format!("{base}stable/aarch64/manifest.json");
        let (passed, report) = f.verify(
            &url,
            &[
                "--chunk-size",
                &chunk.to_string(),
                "--ca",
                ca.ca.to_str().unwrap(),
            ],
        );
        assert!(
            passed,
            "{url}: {report}\nnginx error log:\n{}",
            nginx.error_log()
        );
        assert_ranged(&report, chunk);
    }

    // nginx answered the ranged requests with 206: 7 + 2 + 1 per scheme.
    let log = nginx.access_log();
    let partial = log.lines().filter(|l| l.contains("\" 206 ")).count();
    assert_eq!(partial, 2 * (7 + 2 + 1), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("GET /stable/aarch64/manifest.json HTTP/1.1\" 200 ")),
        "{log}"
    );
}

#[test]
fn nginx_serving_a_tampered_tree_is_refused() {
    if !nginx_present() {
        return;
    }
    let f = Fixture::new();
    let ca = TestCa::new(f.dir.path()).unwrap();
    let run = f.dir.path().join("nginx");
    std::fs::create_dir(&run).unwrap();
    // A mirror whose copy of a blob lost its last byte.
    let dtb = std::fs::read(f.input("board.dtb")).unwrap();
    let blob = f.tree.join("blobs/sha256").join(sha256_hex(&dtb));
    std::fs::write(&blob, &dtb[..dtb.len() - 1]).unwrap();
    let nginx = Nginx::start(
        &f.tree,
        &TlsFiles {
            cert: ca.cert.clone(),
            key: ca.key.clone(),
        },
        &run,
    )
    .unwrap();
    let url = format!("http://{}/stable/aarch64/manifest.json", nginx.http);
    let (passed, report) = f.verify(&url, &[]);
    assert!(!passed);
    // nginx clips the range to the shorter file, and says so.
    let error = report["error"].as_str().unwrap();
    let blob_url = format!("http://{}/blobs/sha256/{}", nginx.http, sha256_hex(&dtb));
    assert!(
        error.starts_with(&format!(
            "dtb {blob_url}: GET {blob_url} with Range bytes=0-2344: "
        )),
        "{error}"
    );
    assert!(
        error.ends_with("Content-Range is Some(\"bytes 0-2343/2344\")"),
        "{error}"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    phase_manifest::encoding::hex(&Sha256::digest(bytes))
}

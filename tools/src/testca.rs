//! A certificate authority for tests and the QEMU scenarios: a CA and a
//! server certificate for 127.0.0.1, localhost and 10.0.2.2 (the host as a
//! QEMU user-network guest sees it), as PEM files. Only with
//! the `test-ca` feature; nothing a user runs trusts it.

use std::io;
use std::path::{Path, PathBuf};

fn tls_error(e: rcgen::Error) -> io::Error {
    io::Error::other(e)
}

/// A CA and a server certificate for 127.0.0.1 and localhost, as PEM files.
pub struct TestCa {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// Writes ca.pem, server.pem and server.key into `dir`.
    pub fn new(dir: &Path) -> io::Result<TestCa> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().map_err(tls_error)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Phase Boot test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_error)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().map_err(tls_error)?;
        let mut params = CertificateParams::new(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
            "10.0.2.2".to_owned(),
        ])
        .map_err(tls_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "phase test provider");
        let cert = params.signed_by(&server_key, &issuer).map_err(tls_error)?;

        let ca = TestCa {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&ca.ca, ca_cert.pem())?;
        std::fs::write(&ca.cert, cert.pem())?;
        std::fs::write(&ca.key, server_key.serialize_pem())?;
        Ok(ca)
    }
}

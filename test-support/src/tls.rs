//! Certificates made at run time for the TLS tests: [`TestPki`] is a fresh CA with a
//! server certificate and a client certificate it signed, written as PEM files to a
//! temporary directory that lives as long as the value. Nothing is checked in, and
//! nothing expires (rcgen's default validity, 1975 to 4096).
//!
//! [`https_status`] is the blocking HTTPS probe [`crate::AnnalsServer`] waits with when
//! it serves TLS.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tempfile::TempDir;

/// A CA, a server certificate and a client certificate, as PEM files.
#[derive(Debug)]
pub struct TestPki {
    dir: TempDir,
    ca_pem: String,
}

impl TestPki {
    /// A new CA and a server certificate for `names` (DNS names or IP addresses, e.g.
    /// `["localhost", "127.0.0.1"]`), plus a client certificate (`annals-test-client`).
    pub fn new(names: &[&str]) -> TestPki {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Annals test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("a CA key"))
            .expect("a self-signed CA");

        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut server_params = CertificateParams::new(names).expect("server certificate params");
        server_params
            .distinguished_name
            .push(DnType::CommonName, "annals-test-server");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().expect("a server key");
        let server = server_params
            .signed_by(&server_key, &ca)
            .expect("a server certificate");

        let mut client_params =
            CertificateParams::new(vec!["annals-test-client".to_owned()]).expect("client params");
        client_params
            .distinguished_name
            .push(DnType::CommonName, "annals-test-client");
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().expect("a client key");
        let client = client_params
            .signed_by(&client_key, &ca)
            .expect("a client certificate");

        let ca_pem = ca.pem();
        let files = [
            ("ca.pem", ca_pem.clone()),
            ("server.pem", server.pem()),
            ("server-key.pem", server_key.serialize_pem()),
            ("client.pem", client.pem()),
            ("client-key.pem", client_key.serialize_pem()),
        ];
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents)
                .unwrap_or_else(|error| panic!("cannot write {name}: {error}"));
        }
        TestPki { dir, ca_pem }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate (PEM), signed by the CA.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server's private key (PEM, PKCS#8).
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server-key.pem")
    }

    /// The client certificate (PEM), signed by the CA.
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }

    /// The client's private key (PEM, PKCS#8).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client-key.pem")
    }

    /// A rustls client configuration that trusts this CA only (ring provider).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots
                .add(certificate.expect("the CA's PEM"))
                .expect("the CA is a usable root");
        }
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    }
}

/// The status code of `GET path` over HTTPS at `address` (verified with `config` for the
/// name `127.0.0.1`), or `None` if nothing answered properly.
pub fn https_status(
    config: &Arc<rustls::ClientConfig>,
    address: SocketAddr,
    path: &str,
) -> Option<u16> {
    let stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let name = ServerName::IpAddress(address.ip().into());
    let connection = rustls::ClientConnection::new(config.clone(), name).ok()?;
    let mut tls = rustls::StreamOwned::new(connection, stream);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    tls.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

//! TLS for the command line: the certificates `annals serve --tls-cert --tls-key` serves
//! HTTPS with, the listener that does the handshakes, the `--nats-tls-*` flags every
//! command that talks to NATS shares, and the roots a `--server https://...` client
//! trusts (`--ca-cert`).
//!
//! rustls with the ring provider everywhere (aws-lc-rs needs a C and cmake build); the
//! provider is passed explicitly, never installed process-wide. PEM files are read here,
//! once, and a bad one is an error naming the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::exit::Failure;

/// How long a client may take to complete the TLS handshake before its connection is
/// dropped: a slow or silent client must not hold a handshake slot for ever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many handshakes run at once; further connections wait in the kernel's backlog.
/// Bounds the memory and CPU a flood of new connections can take.
const MAX_HANDSHAKES: usize = 256;

/// Handshaken connections waiting for the HTTP server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// The ring crypto provider, for every rustls configuration made here.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate and key files `annals serve` serves HTTPS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// The PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// The PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl ServerFiles {
    /// Both files or neither: one without the other is a usage error.
    pub fn pair(cert: Option<PathBuf>, key: Option<PathBuf>) -> anyhow::Result<Option<Self>> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(ServerFiles { cert, key })),
            (None, None) => Ok(None),
            (Some(cert), None) => Err(Failure::Usage(format!(
                "--tls-cert {} needs --tls-key (ANNALS_TLS_KEY, tls_key): HTTPS takes both a \
                 certificate and its key",
                cert.display()
            ))
            .into()),
            (None, Some(key)) => Err(Failure::Usage(format!(
                "--tls-key {} needs --tls-cert (ANNALS_TLS_CERT, tls_cert): HTTPS takes both a \
                 certificate and its key",
                key.display()
            ))
            .into()),
        }
    }

    /// The rustls server configuration of these files. It offers HTTP/1.1 only, as the
    /// server speaks it (axum is built without HTTP/2).
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let chain = certificates(&self.cert, "TLS certificate")?;
        let key = private_key(&self.key)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("the ring provider offers no TLS version")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|error| {
                Failure::Usage(format!(
                    "the TLS key {} does not fit the certificate {}: {error}",
                    self.key.display(),
                    self.cert.display()
                ))
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Every certificate in the PEM file `path` (at least one).
pub fn certificates(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes = read(path, what)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            Failure::Usage(format!(
                "the {what} {} is not valid PEM: {error}",
                path.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(Failure::Usage(format!(
            "the {what} {} holds no certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ))
        .into());
    }
    Ok(chain)
}

/// The private key in the PEM file `path`.
fn private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let bytes = read(path, "TLS key")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| {
        Failure::Usage(format!(
            "the TLS key {} holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {error}",
            path.display()
        ))
        .into()
    })
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| {
        Failure::Usage(format!(
            "cannot read the {what} {}: {error}",
            path.display()
        ))
        .into()
    })
}

/// The roots a client of `--server https://...` trusts: the system's, and the CAs in
/// `ca_cert` if given.
pub fn client_config(ca_cert: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "a system root certificate could not be loaded");
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_cert {
        for certificate in certificates(path, "CA certificate (--ca-cert)")? {
            roots.add(certificate).map_err(|error| {
                Failure::Usage(format!(
                    "the CA certificate (--ca-cert) {} is not a usable CA: {error}",
                    path.display()
                ))
            })?;
        }
    }
    // No ALPN here: the HTTPS connector sets it (HTTP/1.1).
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("the ring provider offers no TLS version")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The `--nats-tls-*` flags of every command that connects to NATS.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsTlsArgs {
    /// A PEM file of CA certificates that sign the NATS server's certificate (besides
    /// the system's roots); TLS is then required (a `tls://` URL asks for it too).
    #[arg(long, env = "ANNALS_NATS_TLS_CA", value_name = "FILE")]
    pub nats_tls_ca: Option<PathBuf>,
    /// A PEM client certificate for a NATS server that verifies clients; needs
    /// --nats-tls-key.
    #[arg(long, env = "ANNALS_NATS_TLS_CERT", value_name = "FILE")]
    pub nats_tls_cert: Option<PathBuf>,
    /// The PEM private key of --nats-tls-cert.
    #[arg(long, env = "ANNALS_NATS_TLS_KEY", value_name = "FILE")]
    pub nats_tls_key: Option<PathBuf>,
}

impl NatsTlsArgs {
    /// The outbox's TLS settings, checked (the certificate with its key, every file
    /// readable PEM).
    pub fn settings(&self) -> anyhow::Result<outbox::NatsTls> {
        let tls = outbox::NatsTls {
            ca: self.nats_tls_ca.clone(),
            cert: self.nats_tls_cert.clone(),
            key: self.nats_tls_key.clone(),
        };
        tls.validate()?;
        Ok(tls)
    }
}

/// A listener that hands the HTTP server connections whose TLS handshake is done.
///
/// A task accepts TCP connections and runs each handshake in a task of its own (at most
/// [`MAX_HANDSHAKES`] at once, each within [`HANDSHAKE_TIMEOUT`]), so that a slow client
/// never holds up the others; a failed handshake (plain HTTP on this port, an untrusted
/// certificate) closes that connection and is logged at debug level. Dropping the
/// listener (the server's graceful shutdown does) stops accepting.
#[derive(Debug)]
pub struct TlsListener {
    local_addr: SocketAddr,
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS with `config` on `listener`.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (sender, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        let accept_task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), sender));
        Ok(TlsListener {
            local_addr,
            accepted,
            accept_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    sender: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            () = sender.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    // The server may be shutting down: then the connection just closes.
                    let _ = sender.send((tls, peer)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => {
                    tracing::debug!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out")
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept task ended, which it does only when this listener is dropped:
            // never reached while the server runs, so wait for ever like an idle port.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

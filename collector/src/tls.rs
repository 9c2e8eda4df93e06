//! TLS for the collector's two servers, and the identity a probe proves with
//! its client certificate.
//!
//! gRPC ingest uses mutual TLS through tonic (rustls): a probe must present a
//! certificate signed by `--client-ca`, and every batch's `node` must be a
//! DNS name of that certificate, so a probe cannot report flows as another
//! node. The HTTP API may serve HTTPS ([`HttpsListener`]) with the same kind
//! of PEM files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A TLS handshake that takes longer is abandoned, so that a client that
/// connects and says nothing holds no resources for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished HTTPS handshakes waiting for the HTTP server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// Files for mutual TLS on the gRPC ingest port.
#[derive(Debug, Clone)]
pub struct GrpcTls {
    /// The collector's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// Probes must present a certificate signed by this CA (PEM).
    pub client_ca: PathBuf,
}

/// Files for HTTPS on the API port.
#[derive(Debug, Clone)]
pub struct HttpTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} {path} holds no PEM {expected}")]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("the {what} {path} is not valid PEM")]
    Pem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("the certificate {cert} and key {key} cannot serve TLS")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Reads a PEM file and checks that it holds at least one certificate, so a
/// swapped cert/key path is named at start-up rather than at the first
/// handshake.
fn read_certs(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(what, path)?;
    let certs = parse_certs(what, path, &pem)?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
            expected: "CERTIFICATE",
        });
    }
    Ok(pem)
}

fn parse_certs(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            path: path.to_owned(),
            source,
        })
}

fn read_key(
    what: &'static str,
    path: &Path,
) -> Result<(Vec<u8>, PrivateKeyDer<'static>), TlsError> {
    let pem = read(what, path)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what,
            path: path.to_owned(),
            expected: "PRIVATE KEY",
        },
        source => TlsError::Pem {
            what,
            path: path.to_owned(),
            source,
        },
    })?;
    Ok((pem, key))
}

impl GrpcTls {
    /// tonic's server configuration: our identity, and client certificates
    /// required and verified against the client CA.
    pub fn server_config(&self) -> Result<tonic::transport::ServerTlsConfig, TlsError> {
        let cert = read_certs("collector certificate", &self.cert)?;
        let (key, _) = read_key("collector key", &self.key)?;
        let ca = read_certs("client CA", &self.client_ca)?;
        Ok(tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key))
            .client_ca_root(tonic::transport::Certificate::from_pem(ca))
            .timeout(HANDSHAKE_TIMEOUT))
    }
}

/// Client-side TLS for anything that sends batches (the probe, `replay`):
/// trust `ca`, present `cert`/`key` when given.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
    let ca = read_certs("collector CA", ca)?;
    let mut config = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca));
    if let Some((cert, key)) = identity {
        let cert = read_certs("client certificate", cert)?;
        let (key, _) = read_key("client key", key)?;
        config = config.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    Ok(config)
}

/// Who sent a batch, as far as the transport can tell.
#[derive(Debug, Clone, Default)]
pub enum Peer {
    /// Plaintext gRPC (no TLS flag given): any node name is taken on trust.
    #[default]
    Unverified,
    /// The verified client certificate chain, leaf first.
    Certificate(Arc<Vec<CertificateDer<'static>>>),
}

impl Peer {
    /// `Err` names why this peer may not report flows as `node`.
    pub fn may_report_as(&self, node: &str) -> Result<(), String> {
        let Peer::Certificate(chain) = self else {
            return Ok(());
        };
        let Some(leaf) = chain.first() else {
            return Err("the TLS session carries no client certificate".into());
        };
        let name = ServerName::try_from(node).map_err(|_| {
            format!("node {node:?} is not a DNS name, so no client certificate can vouch for it")
        })?;
        let cert = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| format!("the client certificate cannot be parsed: {e}"))?;
        cert.verify_is_valid_for_subject_name(&name).map_err(|_| {
            format!(
                "node {node:?} is not a name in the client certificate (a probe may only report flows of its own node)"
            )
        })
    }
}

impl HttpTls {
    fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let cert_pem = read_certs("HTTPS certificate", &self.cert)?;
        let certs = parse_certs("HTTPS certificate", &self.cert, &cert_pem)?;
        let (_, key) = read_key("HTTPS key", &self.key)?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|source| TlsError::Config {
            cert: self.cert.clone(),
            key: self.key.clone(),
            source,
        })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// An HTTPS listener for `axum::serve`. Handshakes run in their own tasks
/// (with a timeout), so one slow client never holds up the others.
pub struct HttpsListener {
    local: SocketAddr,
    accepted: mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    _acceptor: tokio::task::JoinHandle<()>,
}

impl HttpsListener {
    pub fn new(listener: TcpListener, tls: &HttpTls) -> Result<Self, TlsError> {
        let acceptor = tls.acceptor()?;
        let local = listener.local_addr().map_err(|source| TlsError::Read {
            what: "HTTPS listener address",
            path: PathBuf::new(),
            source,
        })?;
        let (tx, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTPS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
                    }
                });
            }
        });
        Ok(HttpsListener {
            local,
            accepted,
            _acceptor: task,
        })
    }
}

impl Drop for HttpsListener {
    fn drop(&mut self) {
        self._acceptor.abort();
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(c) => c,
            // The accept task only ends when aborted by our own drop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

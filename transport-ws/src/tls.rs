//! `wss://`: TLS under the WebSocket, with rustls and its ring provider.
//!
//! The configurations a [`WsTransport`](crate::WsTransport) needs: [`TlsServer`] to listen on
//! `wss://`, [`TlsClient`] to dial it. Each wraps a rustls configuration, built here from PEM
//! files or handed in whole.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use meshbus_core::transport::Addr;
use meshbus_core::{Error, ErrorKind};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::stream::{Counted, Stream};

/// How a listener on `wss://` proves who it is: its certificate chain and private key, as a
/// rustls [`ServerConfig`].
///
/// Build one from PEM files with [`from_pem_files`](Self::from_pem_files), or hand in a
/// [`ServerConfig`] of your own (client certificates, several names, ...) with
/// [`new`](Self::new) or `From`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TlsServer {
    config: Arc<ServerConfig>,
}

impl TlsServer {
    /// Wraps a rustls server configuration as it is.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        TlsServer { config }
    }

    /// A server presenting the certificate chain in the PEM file `cert_chain` (the node's
    /// certificate first, then any intermediates) with the private key in the PEM file `key`
    /// (PKCS#8, PKCS#1 or SEC1). TLS 1.3 and 1.2, ring's cipher suites, no client
    /// certificates.
    ///
    /// # Errors
    ///
    /// A [`Config`](ErrorKind::Config) error naming the file and what was wrong with it: it
    /// cannot be read, holds no certificate (or no key), is not valid PEM, or the key does
    /// not belong to the first certificate.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        let (cert_path, key_path) = (cert_chain.as_ref(), key.as_ref());
        let certs_from = format!("the certificate chain file {}", cert_path.display());
        let key_from = format!("the private key file {}", key_path.display());
        let chain = certs(&read(cert_path, &certs_from)?, &certs_from)?;
        let key = private_key(&read(key_path, &key_from)?, &key_from)?;
        server_config(chain, key, &certs_from, &key_from)
    }

    /// As [`from_pem_files`](Self::from_pem_files), from PEM text already in memory.
    ///
    /// # Errors
    ///
    /// As [`from_pem_files`](Self::from_pem_files).
    pub fn from_pem_bytes(cert_chain: &[u8], key: &[u8]) -> Result<Self, Error> {
        let (certs_from, key_from) = ("the certificate chain PEM", "the private key PEM");
        let chain = certs(cert_chain, certs_from)?;
        let key = private_key(key, key_from)?;
        server_config(chain, key, certs_from, key_from)
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

impl From<Arc<ServerConfig>> for TlsServer {
    fn from(config: Arc<ServerConfig>) -> Self {
        TlsServer::new(config)
    }
}

impl From<ServerConfig> for TlsServer {
    fn from(config: ServerConfig) -> Self {
        TlsServer::new(Arc::new(config))
    }
}

/// Which servers a node dialling `wss://` trusts, as a rustls [`ClientConfig`].
///
/// Build one trusting the root certificates of a PEM file with
/// [`with_roots_pem`](Self::with_roots_pem) (no system or bundled roots are ever added: a mesh
/// usually has a CA of its own), or hand in a [`ClientConfig`] of your own with
/// [`new`](Self::new) or `From`. The server's certificate is checked against the dialled
/// address's host, a DNS name or an IP address. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl TlsClient {
    /// Wraps a rustls client configuration as it is.
    pub fn new(config: Arc<ClientConfig>) -> Self {
        TlsClient { config }
    }

    /// A client trusting every certificate in the PEM file `roots` as a root, and nothing
    /// else. TLS 1.3 and 1.2, ring's cipher suites, no client certificate.
    ///
    /// # Errors
    ///
    /// A [`Config`](ErrorKind::Config) error naming the file and what was wrong with it: it
    /// cannot be read, is not valid PEM, holds no certificate, or a certificate in it cannot
    /// be a root.
    pub fn with_roots_pem(roots: impl AsRef<Path>) -> Result<Self, Error> {
        let path = roots.as_ref();
        let from = format!("the root certificates file {}", path.display());
        client_config(certs(&read(path, &from)?, &from)?, &from)
    }

    /// As [`with_roots_pem`](Self::with_roots_pem), from PEM text already in memory.
    ///
    /// # Errors
    ///
    /// As [`with_roots_pem`](Self::with_roots_pem).
    pub fn with_roots_pem_bytes(roots: &[u8]) -> Result<Self, Error> {
        let from = "the root certificates PEM";
        client_config(certs(roots, from)?, from)
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }
}

impl From<Arc<ClientConfig>> for TlsClient {
    fn from(config: Arc<ClientConfig>) -> Self {
        TlsClient::new(config)
    }
}

impl From<ClientConfig> for TlsClient {
    fn from(config: ClientConfig) -> Self {
        TlsClient::new(Arc::new(config))
    }
}

fn config_error(detail: String) -> Error {
    Error::new(ErrorKind::Config).with_detail(detail)
}

/// ring, whatever provider the process installed as its default: the choice stays ours.
fn provider() -> Arc<CryptoProvider> {
    // rustls 0.23.48 deprecates ring's provider for its lack of post-quantum key exchange;
    // ring is still chosen here to keep aws-lc (a C and assembly build) out of the tree.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| config_error(format!("could not read {what}: {e}")).with_source(e))
}

/// Every certificate in `pem`, at least one.
fn certs(pem: &[u8], from: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(from, e))?;
    if certs.is_empty() {
        return Err(config_error(format!(
            "{from} holds no certificate (no -----BEGIN CERTIFICATE----- section)"
        )));
    }
    Ok(certs)
}

/// The first private key in `pem`.
fn private_key(pem: &[u8], from: &str) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => config_error(format!(
            "{from} holds no private key (no PKCS#8, PKCS#1 or SEC1 section)"
        )),
        e => bad_pem(from, e),
    })
}

fn bad_pem(from: &str, err: pem::Error) -> Error {
    let why = match &err {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a section has no -----END {}----- line",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "a malformed -----BEGIN line: {}",
            String::from_utf8_lossy(line)
        ),
        other => other.to_string(),
    };
    config_error(format!("{from} is not valid PEM: {why}")).with_source(err)
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    certs_from: &str,
    key_from: &str,
) -> Result<TlsServer, Error> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(format!("no TLS version available: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            let why = match &e {
                rustls::Error::InconsistentKeys(_) => {
                    "the key does not belong to the first certificate of the chain".to_owned()
                }
                other => other.to_string(),
            };
            config_error(format!(
                "{key_from} and {certs_from} do not go together: {why}"
            ))
            .with_source(e)
        })?;
    Ok(TlsServer::new(Arc::new(config)))
}

fn client_config(roots: Vec<CertificateDer<'static>>, from: &str) -> Result<TlsClient, Error> {
    let mut store = RootCertStore::empty();
    for (i, cert) in roots.into_iter().enumerate() {
        store.add(cert).map_err(|e| {
            config_error(format!(
                "certificate {} of {from} cannot be a root: {e}",
                i + 1
            ))
            .with_source(e)
        })?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(format!("no TLS version available: {e}")))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(TlsClient::new(Arc::new(config)))
}

/// The client's handshake over a connected socket, checking the server's certificate
/// against `host`. `addr` names the dialled address in errors.
pub(crate) async fn connect(
    client: &TlsClient,
    host: &str,
    io: Counted<TcpStream>,
    addr: &Addr,
) -> Result<Stream, Error> {
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        config_error(format!(
            "{addr}: the host {host:?} is neither a DNS name nor an IP address a certificate \
             can name"
        ))
        .with_source(e)
    })?;
    let stream = TlsConnector::from(Arc::clone(&client.config))
        .connect(name, io)
        .await
        .map_err(|e| handshake_error(format_args!("the TLS handshake with {addr} failed"), e))?;
    Ok(Stream::Tls(Box::new(stream.into())))
}

/// The server's handshake over an accepted socket.
pub(crate) async fn accept(server: &TlsServer, io: Counted<TcpStream>) -> Result<Stream, Error> {
    let stream = TlsAcceptor::from(Arc::clone(&server.config))
        .accept(io)
        .await
        .map_err(|e| handshake_error("the TLS handshake failed", e))?;
    Ok(Stream::Tls(Box::new(stream.into())))
}

/// A failed handshake: [`Unauthorized`](ErrorKind::Unauthorized) when a certificate was
/// refused, by us or by the peer; [`Io`](ErrorKind::Io) otherwise (not TLS, a reset, ...).
fn handshake_error(what: impl fmt::Display, err: io::Error) -> Error {
    let rustls_error = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    let kind = match rustls_error {
        Some(e) if refuses_a_certificate(e) => ErrorKind::Unauthorized,
        _ => ErrorKind::Io,
    };
    Error::new(kind)
        .with_detail(format!("{what}: {err}"))
        .with_source(err)
}

fn refuses_a_certificate(err: &rustls::Error) -> bool {
    match err {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => true,
        rustls::Error::AlertReceived(alert) => matches!(
            alert,
            AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA
                | AlertDescription::AccessDenied
                | AlertDescription::CertificateRequired
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_certificate_is_unauthorized_anything_else_io() {
        let refused = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(
            handshake_error("x", refused).kind(),
            ErrorKind::Unauthorized
        );
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        );
        assert_eq!(handshake_error("x", alert).kind(), ErrorKind::Unauthorized);
        let garbage = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        assert_eq!(handshake_error("x", garbage).kind(), ErrorKind::Io);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        let err = handshake_error("the TLS handshake failed", reset);
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(
            err.to_string().contains("the TLS handshake failed"),
            "{err}"
        );
    }
}

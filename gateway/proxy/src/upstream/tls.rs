//! TLS client settings for an upstream cluster, built once per snapshot.
//!
//! Static endpoints are IP addresses, so the server name sent as SNI and verified against the
//! certificate comes from the config (`tls.sni`), never from the request URI.
//!
//! The CA bundle and the client certificate (mutual TLS, `tls.cert`/`tls.key`) are read by the
//! caller ([`read_ca`], [`read_identity`]) so that their bytes can also decide whether a reload
//! keeps the connection pools: a file changed on disk must reach new handshakes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use levee_config::{CertificatePair, UpstreamProtocol, UpstreamTls};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// What the connector needs to open TLS connections for one cluster.
#[derive(Debug, Clone)]
pub(crate) struct TlsSettings {
    pub(crate) config: Arc<rustls::ClientConfig>,
    pub(crate) server_name: ServerName<'static>,
}

/// Why a cluster's TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsConfigError {
    /// The CA bundle could not be read.
    #[error("cannot read CA file {}: {source}", path.display())]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The CA bundle is not valid PEM.
    #[error("CA file {} is not valid PEM: {source}", path.display())]
    BadPem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate in the CA bundle is not a usable trust anchor.
    #[error("CA file {} holds an unusable certificate: {source}", path.display())]
    BadCertificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The CA bundle holds no certificate at all.
    #[error("CA file {} holds no certificate", path.display())]
    NoCertificates { path: PathBuf },
    /// The client certificate or its key could not be read.
    #[error("cannot read client certificate file {}: {source}", path.display())]
    ReadIdentity {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The client certificate or its key is not usable PEM.
    #[error("client certificate file {}: {reason}", path.display())]
    BadIdentity { path: PathBuf, reason: String },
    /// `sni` is neither a DNS name nor an IP address.
    #[error("invalid TLS server name {0:?}")]
    BadServerName(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Reads the CA bundle at `path` as it is now.
pub(crate) fn read_ca(path: &Path) -> Result<Arc<[u8]>, TlsConfigError> {
    std::fs::read(path)
        .map(Arc::from)
        .map_err(|source| TlsConfigError::ReadCa {
            path: path.to_owned(),
            source,
        })
}

/// A client certificate chain and its key, as read from their PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    files: CertificatePair,
    cert: Arc<[u8]>,
    key: Arc<[u8]>,
}

/// Reads the client certificate and key of `pair` as they are now.
pub(crate) fn read_identity(pair: &CertificatePair) -> Result<Identity, TlsConfigError> {
    let read = |path: &Path| {
        std::fs::read(path)
            .map(Arc::from)
            .map_err(|source| TlsConfigError::ReadIdentity {
                path: path.to_owned(),
                source,
            })
    };
    Ok(Identity {
        files: pair.clone(),
        cert: read(&pair.cert)?,
        key: read(&pair.key)?,
    })
}

/// Builds the client settings: ring provider, TLS 1.2 and 1.3, the configured CA bundle (or the
/// Mozilla roots), and ALPN `h2` or `http/1.1` to match `protocol`. `ca_pem` is the content of
/// `tls.ca_file` from [`read_ca`], and `identity` the client certificate of `tls.cert`/`tls.key`
/// from [`read_identity`]; either file is read here when it is not given.
pub(crate) fn settings(
    tls: &UpstreamTls,
    ca_pem: Option<&[u8]>,
    identity: Option<&Identity>,
    protocol: UpstreamProtocol,
) -> Result<TlsSettings, TlsConfigError> {
    let server_name = ServerName::try_from(tls.sni.clone())
        .map_err(|_| TlsConfigError::BadServerName(tls.sni.clone()))?;

    let roots = match (&tls.ca_file, ca_pem) {
        (Some(path), Some(pem)) => load_roots(path, pem)?,
        (Some(path), None) => load_roots(path, &read_ca(path)?)?,
        (None, _) => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots);
    let read;
    let identity = match (identity, &tls.client_cert) {
        (Some(identity), _) => Some(identity),
        (None, Some(pair)) => {
            read = read_identity(pair)?;
            Some(&read)
        }
        (None, None) => None,
    };
    let mut config = match identity {
        Some(identity) => {
            let (chain, key) = identity.parse()?;
            config.with_client_auth_cert(chain, key)?
        }
        None => config.with_no_client_auth(),
    };
    config.alpn_protocols = match protocol {
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
        UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
    };

    Ok(TlsSettings {
        config: Arc::new(config),
        server_name,
    })
}

/// Parses the CA bundle `pem`, read from `path` (named in errors).
fn load_roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|source| TlsConfigError::BadPem {
            path: path.to_owned(),
            source,
        })?;
        roots
            .add(cert)
            .map_err(|source| TlsConfigError::BadCertificate {
                path: path.to_owned(),
                source,
            })?;
    }
    if roots.is_empty() {
        return Err(TlsConfigError::NoCertificates {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

// === impl Identity ===

impl Identity {
    /// The certificate chain (leaf first) and the private key.
    fn parse(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsConfigError> {
        let bad = |path: &Path, reason: String| TlsConfigError::BadIdentity {
            path: path.to_owned(),
            reason,
        };
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&self.files.cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(bad(&self.files.cert, "no certificate in file".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .map_err(|e| bad(&self.files.key, e.to_string()))?;
        Ok((chain, key))
    }
}

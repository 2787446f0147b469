//! TLS client settings for an upstream cluster, built once per snapshot.
//!
//! Static endpoints are IP addresses, so the server name sent as SNI and verified against the
//! certificate comes from the config (`tls.sni`), never from the request URI.

use std::path::PathBuf;
use std::sync::Arc;

use levee_config::{UpstreamProtocol, UpstreamTls};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

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
    /// `sni` is neither a DNS name nor an IP address.
    #[error("invalid TLS server name {0:?}")]
    BadServerName(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the client settings: ring provider, TLS 1.2 and 1.3, the configured CA bundle (or the
/// Mozilla roots), and ALPN `h2` or `http/1.1` to match `protocol`.
pub(crate) fn settings(
    tls: &UpstreamTls,
    protocol: UpstreamProtocol,
) -> Result<TlsSettings, TlsConfigError> {
    let server_name = ServerName::try_from(tls.sni.clone())
        .map_err(|_| TlsConfigError::BadServerName(tls.sni.clone()))?;

    let roots = match &tls.ca_file {
        Some(path) => load_roots(path)?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = match protocol {
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
        UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
    };

    Ok(TlsSettings {
        config: Arc::new(config),
        server_name,
    })
}

fn load_roots(path: &PathBuf) -> Result<RootCertStore, TlsConfigError> {
    let pem = std::fs::read(path).map_err(|source| TlsConfigError::ReadCa {
        path: path.clone(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|source| TlsConfigError::BadPem {
            path: path.clone(),
            source,
        })?;
        roots
            .add(cert)
            .map_err(|source| TlsConfigError::BadCertificate {
                path: path.clone(),
                source,
            })?;
    }
    if roots.is_empty() {
        return Err(TlsConfigError::NoCertificates { path: path.clone() });
    }
    Ok(roots)
}

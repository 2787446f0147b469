//! TLS termination: loads a listener's certificates and picks one per handshake by SNI.
//!
//! Certificates, and the CA bundle that client certificates are verified against (mutual
//! TLS, `tls.client_auth`), are re-read from disk on every `apply()`, so a reload (triggered by
//! the watcher when one of these files changes) swaps in the new files for new handshakes
//! without a rebind.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use http::HeaderValue;
use levee_config::{CertificatePair, ClientAuth, ClientAuthMode, ListenerTls, TlsVersion};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use super::ListenerError;

/// ALPN protocols offered to clients, in preference order.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Builds the rustls server config of listener `name` from `tls`, reading every file now.
pub(super) fn load(name: &str, tls: &ListenerTls) -> Result<Arc<ServerConfig>, ListenerError> {
    let err = |reason: String| ListenerError {
        name: name.to_owned(),
        reason,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = SniResolver::load(&tls.certificates, &provider).map_err(err)?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| err(format!("TLS setup: {e}")))?;
    let builder = match &tls.client_auth {
        Some(auth) => {
            builder.with_client_cert_verifier(client_verifier(auth, provider).map_err(err)?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The verifier of client certificates: chains to a CA of `auth.ca_file` (read now), and
/// with `mode: optional` no certificate at all is also accepted.
fn client_verifier(
    auth: &ClientAuth,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let path = &auth.ca_file;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| file_error(path, &e))? {
        let cert = cert.map_err(|e| file_error(path, &e))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no CA certificate in file", path.display()));
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = match auth.mode {
        ClientAuthMode::Required => builder,
        ClientAuthMode::Optional => builder.allow_unauthenticated(),
    };
    builder
        .build()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Picks a certificate by the client's SNI: exact SAN names first, then `*.suffix` wildcard
/// names, then the first certificate (also used when the client sends no SNI).
#[derive(Debug)]
pub(super) struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

// === impl SniResolver ===

impl SniResolver {
    fn load(pairs: &[CertificatePair], provider: &CryptoProvider) -> Result<Self, String> {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        for pair in pairs {
            let (key, names) = load_pair(pair, provider)?;
            let key = Arc::new(key);
            for name in names {
                let name = name.to_ascii_lowercase();
                // An earlier certificate keeps a name that a later one repeats, like the default.
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_owned()),
                    None => exact.entry(name),
                }
                .or_insert_with(|| key.clone());
            }
            default.get_or_insert(key);
        }
        let default = default.ok_or_else(|| "TLS needs at least one certificate".to_owned())?;
        Ok(Self {
            exact,
            wildcard,
            default,
        })
    }

    /// The certificate for `sni` (no SNI picks the default).
    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(sni) = sni else {
            return self.default.clone();
        };
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.exact.get(&sni) {
            return key.clone();
        }
        // A wildcard covers exactly one label.
        if let Some((_, suffix)) = sni.split_once('.')
            && let Some(key) = self.wildcard.get(suffix)
        {
            return key.clone();
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(client_hello.server_name()))
    }
}

/// Reads one certificate chain and key, and returns them with the leaf's SAN DNS names.
fn load_pair(
    pair: &CertificatePair,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, Vec<String>), String> {
    let chain = CertificateDer::pem_file_iter(&pair.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error(&pair.cert, &e))?;
    let Some(leaf) = chain.first() else {
        return Err(format!("{}: no certificate in file", pair.cert.display()));
    };
    let names = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("{}: {e}", pair.cert.display()))?
        .valid_dns_names()
        .map(str::to_owned)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&pair.key).map_err(|e| file_error(&pair.key, &e))?;
    let certified = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("{} with {}: {e}", pair.cert.display(), pair.key.display()))?;
    Ok((certified, names))
}

/// The `x-forwarded-client-cert` element of a verified client certificate, as Envoy writes it:
/// `Hash=` the SHA-256 of its DER in lower-case hex, then `;DNS=` each DNS name it holds.
pub(super) fn client_cert_details(leaf: &CertificateDer<'_>) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::from("Hash=");
    for byte in Sha256::digest(leaf.as_ref()) {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    if let Ok(cert) = webpki::EndEntityCert::try_from(leaf) {
        for name in cert.valid_dns_names() {
            out.push_str(";DNS=");
            out.push_str(name);
        }
    }
    // Hex digits and DNS names are always valid header text.
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("Hash="))
}

fn file_error(path: &Path, e: &rustls_pki_types::pem::Error) -> String {
    format!("{}: {e}", path.display())
}

//! A throwaway certificate authority per test, and leaf certificates written as PEM files.
//!
//! Generated with rcgen each time, so no key material is checked in and every test trusts only
//! its own CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::crypto_provider;

/// A certificate authority; its certificate is written to `<dir>/<name>-ca.pem`.
#[derive(Debug)]
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    /// The CA certificate file.
    pub cert_path: PathBuf,
}

/// A leaf certificate signed by a [`Ca`], with its key, as PEM files and DER.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The certificate file (PEM).
    pub cert_path: PathBuf,
    /// The private key file (PEM, PKCS#8).
    pub key_path: PathBuf,
    /// The certificate (DER).
    pub cert_der: CertificateDer<'static>,
    /// The private key (PKCS#8 DER).
    pub key_der: Vec<u8>,
}

// === impl Ca ===

impl Ca {
    /// Generates a CA and writes its certificate into `dir` as `<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("levee test CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("ca key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign ca");
        let cert_path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&cert_path, issuer.pem()).expect("write ca pem");
        Ca {
            issuer,
            dir: dir.to_path_buf(),
            cert_path,
        }
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses) and writes
    /// `<stem>.pem` and `<stem>.key` next to the CA.
    pub fn issue(&self, stem: &str, names: &[&str]) -> Leaf {
        self.issue_for(stem, names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// Issues a client certificate (for mutual TLS) for `names`, written like [`Ca::issue`].
    pub fn issue_client(&self, stem: &str, names: &[&str]) -> Leaf {
        self.issue_for(stem, names, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue_for(&self, stem: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, stem);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let cert_path = self.dir.join(format!("{stem}.pem"));
        let key_path = self.dir.join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write leaf pem");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key pem");
        Leaf {
            cert_path,
            key_path,
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A client config that trusts only this CA and offers `alpn` (e.g. `[b"h2"]`).
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der()).expect("add ca root");
        let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

// === impl Leaf ===

impl Leaf {
    /// A client config trusting `ca` that presents this certificate, offering `alpn`.
    pub fn client_config(&self, ca: &Ca, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der()).expect("add ca root");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![self.cert_der.clone()], key)
            .expect("client cert");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A server config presenting this certificate and offering `alpn`.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone()], key)
            .expect("server cert");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

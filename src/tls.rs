//! TLS for the webhook listener: rustls with the `ring` provider, TLS 1.2
//! and 1.3, ALPN `h2` and `http/1.1`, and a serving certificate that can be
//! replaced on disk (cert-manager renewals, kubelet `..data` swaps) without a
//! restart. The certificate is served whatever the SNI (or none).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use crate::certs;

/// The one crypto provider of the process.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs [`provider`] as the process default; harmless when already done.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why a certificate pair or CA bundle could not be used.
#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// A loaded serving pair.
pub struct Pair {
    pub key: Arc<CertifiedKey>,
    /// `notAfter` of the leaf, seconds since the Unix epoch, when readable.
    pub expiry: Option<i64>,
    /// FNV-1a of the two files' bytes, to skip reloads of unchanged files.
    pub fingerprint: u64,
}

/// Reads and checks a certificate chain and its private key (PEM).
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<Pair, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| TlsError(format!("{}: cannot read: {e}", path.display())))
    };
    let (cert_pem, key_pem) = (read(cert_path)?, read(key_path)?);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("{}: invalid PEM: {e}", cert_path.display())))?;
    if chain.is_empty() {
        return Err(TlsError(format!("{}: no certificate", cert_path.display())));
    }
    // The key file is never echoed: only whether it parsed.
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| TlsError(format!("{}: no usable private key", key_path.display())))?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        TlsError(format!(
            "{} and {}: {e}",
            cert_path.display(),
            key_path.display()
        ))
    })?;
    let expiry = certs::not_after(certified.cert[0].as_ref());
    Ok(Pair {
        key: Arc::new(certified),
        expiry,
        fingerprint: crate::digest::fnv1a([cert_pem.as_slice(), key_pem.as_slice()]),
    })
}

/// The serving certificate in use, replaceable at any time.
pub struct CertificateStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<i64>, u64)>,
}

impl fmt::Debug for CertificateStore {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("CertificateStore")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// What a reload did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// The files are unchanged.
    Unchanged,
    /// A new pair is in use.
    Replaced,
}

impl CertificateStore {
    /// Loads the pair; fails when it is unusable.
    pub fn open(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let pair = load_pair(cert_path, key_path)?;
        Ok(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new((pair.key, pair.expiry, pair.fingerprint)),
        })
    }

    /// Re-reads the files; a broken new pair is refused and the old one stays.
    pub fn reload(&self) -> Result<Reload, TlsError> {
        let pair = load_pair(&self.cert_path, &self.key_path)?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.2 == pair.fingerprint {
            return Ok(Reload::Unchanged);
        }
        *current = (pair.key, pair.expiry, pair.fingerprint);
        Ok(Reload::Replaced)
    }

    /// `notAfter` of the certificate in use (seconds since the Unix epoch).
    pub fn expiry(&self) -> Option<i64> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).1
    }

    /// The files this store reads.
    pub fn paths(&self) -> [&Path; 2] {
        [&self.cert_path, &self.key_path]
    }
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .clone(),
        )
    }
}

/// The rustls configuration of the webhook listener; with `client_ca`,
/// clients must present a certificate signed by it.
pub fn server_config(
    store: Arc<CertificateStore>,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| TlsError(format!("{}: cannot read: {e}", path.display())))?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| TlsError(format!("{}: invalid PEM: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| TlsError(format!("{}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(TlsError(format!("{}: no CA certificate", path.display())));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError(format!("{}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

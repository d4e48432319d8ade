//! TLS interception certificates: the bottle CA is loaded once, and a leaf
//! for each intercepted host is minted on demand (fresh key, SAN = host,
//! random serial, validity of a few days) and cached.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::Error;
use audit_lines::{civil_date, unix_now};

/// Leaves are valid from a day ago (clock skew) to this many days ahead.
const LEAF_VALIDITY_DAYS: i64 = 7;
/// A cached leaf older than this is re-minted.
const LEAF_REFRESH_SECS: i64 = 24 * 3600;
/// Cache bound; the cache is emptied when it grows past it.
const LEAF_CACHE_LIMIT: usize = 4096;

struct CachedLeaf {
    config: Arc<ServerConfig>,
    minted_at: i64,
}

/// Mints and caches per-host TLS server configs signed by the bottle CA.
pub struct LeafMinter {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
    cache: Mutex<HashMap<String, CachedLeaf>>,
}

impl std::fmt::Debug for LeafMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafMinter").finish_non_exhaustive()
    }
}

fn read_pem(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::ReadPem {
        path: path.to_path_buf(),
        source,
    })
}

impl LeafMinter {
    /// Loads the CA certificate and key (PEM).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, Error> {
        let cert_pem = read_pem(cert_path)?;
        let key_pem = read_pem(key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| Error::ParsePem {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let ca_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| Error::ParsePem {
                path: cert_path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let issuer = Issuer::from_ca_cert_der(&ca_der, key).map_err(|e| Error::ParsePem {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            issuer,
            ca_der,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The TLS server config presenting a leaf for `host` (cached).
    pub fn server_config_for(&self, host: &str) -> Result<Arc<ServerConfig>, Error> {
        let now = unix_now();
        if let Ok(cache) = self.cache.lock()
            && let Some(leaf) = cache.get(host)
            && now - leaf.minted_at < LEAF_REFRESH_SECS
        {
            return Ok(leaf.config.clone());
        }
        let config = Arc::new(self.mint(host, now)?);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= LEAF_CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(
                host.to_owned(),
                CachedLeaf {
                    config: config.clone(),
                    minted_at: now,
                },
            );
        }
        Ok(config)
    }

    fn mint(&self, host: &str, now: i64) -> Result<ServerConfig, Error> {
        let fail = |reason: String| Error::MintLeaf {
            host: host.to_owned(),
            reason,
        };
        let mut params =
            CertificateParams::new(vec![host.to_owned()]).map_err(|e| fail(e.to_string()))?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, host);
        params.distinguished_name = name;
        let (y, m, d) = ymd(now - 86_400);
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = ymd(now + LEAF_VALIDITY_DAYS * 86_400);
        params.not_after = rcgen::date_time_ymd(y, m, d);
        params.serial_number = Some(self.random_serial().map_err(fail)?);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(|e| fail(e.to_string()))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| fail(e.to_string()))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), self.ca_der.clone()], key_der)
            .map_err(|e| fail(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    fn random_serial(&self) -> Result<SerialNumber, String> {
        let mut bytes = [0u8; 16];
        self.provider
            .secure_random
            .fill(&mut bytes)
            .map_err(|_| "the system random source failed".to_owned())?;
        bytes[0] &= 0x7f;
        bytes[0] |= 0x01;
        Ok(SerialNumber::from_slice(&bytes))
    }
}

/// The UTC calendar day of an instant, as rcgen wants it.
fn ymd(unix_secs: i64) -> (i32, u8, u8) {
    let (year, month, day) = civil_date(unix_secs);
    (year as i32, month, day)
}

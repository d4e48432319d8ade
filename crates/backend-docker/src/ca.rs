//! The bottle CA: minted per bottle with rcgen, key 0600 in a 0700 directory.

use std::io::Read;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SerialNumber,
};

use crate::error::{BackendError, Result};
use crate::state::write_atomic;

pub use sidecar_contract::layout::{CA_CERT_FILE, CA_KEY_FILE};

pub use sidecar_contract::layout::AGENT_CA_FILE;

/// How long a bottle CA is valid: bottles are short-lived.
pub const CA_VALIDITY_DAYS: i64 = 30;

/// A freshly minted CA, PEM-encoded.
pub struct BottleCa {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (never leaves the egress config dir).
    pub key_pem: String,
}

/// Mints a CA for `slug`, valid from a day ago (clock skew) for [`CA_VALIDITY_DAYS`],
/// with a random serial and a path length of zero (it signs leaves only).
pub fn mint_ca(slug: &str, now_unix: i64) -> Result<BottleCa> {
    let fail = |e: rcgen::Error| BackendError::Ca(e.to_string());
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("bot-bottle CA {slug}"));
    name.push(DnType::OrganizationName, "bot-bottle");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let (y, m, d) = civil_date(now_unix - 86_400);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_date(now_unix + CA_VALIDITY_DAYS * 86_400);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    params.serial_number = Some(SerialNumber::from_slice(&random_bytes::<16>()?));
    let key = KeyPair::generate().map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    Ok(BottleCa {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Writes the CA: cert + key (0600) into `config_dir`, the cert alone into `public_dir`.
pub fn write_ca(ca: &BottleCa, config_dir: &Path, public_dir: &Path) -> Result<()> {
    write_atomic(&config_dir.join(CA_KEY_FILE), ca.key_pem.as_bytes(), 0o600)?;
    write_atomic(
        &config_dir.join(CA_CERT_FILE),
        ca.cert_pem.as_bytes(),
        0o644,
    )?;
    write_atomic(
        &public_dir.join(AGENT_CA_FILE),
        ca.cert_pem.as_bytes(),
        0o644,
    )
}

/// Random bytes from the kernel.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(BackendError::io("reading", "/dev/urandom"))?;
    // A positive serial: clear the top bit.
    bytes[0] &= 0x7f;
    Ok(bytes)
}

/// (year, month, day) of a Unix time, as rcgen wants it.
fn civil_date(unix: i64) -> (i32, u8, u8) {
    let (year, month, day) = audit_lines::civil_date(unix);
    (year as i32, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn minted_ca_is_a_ca_with_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let (config, public) = (dir.path().join("config"), dir.path().join("public"));
        crate::state::create_private_dir(&config).unwrap();
        crate::state::create_private_dir(&public).unwrap();
        let a = mint_ca("dev-123456", 1_795_651_200).unwrap();
        let b = mint_ca("dev-123456", 1_795_651_200).unwrap();
        assert_ne!(a.cert_pem, b.cert_pem, "serials and keys are random");
        write_ca(&a, &config, &public).unwrap();
        let key_mode = std::fs::metadata(config.join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        assert!(!public.join(CA_KEY_FILE).exists());
        assert!(
            std::fs::read_to_string(public.join(AGENT_CA_FILE))
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
    }
}

//! The bottle CA: one per bottle, minted with rcgen, whatever engine runs the bottle.
//! The egress sidecar signs its leaf certificates with it; the agent trusts only its
//! certificate. Writing it where the sidecar reads it is each backend's business.

use std::io::Read;

use backend_api::{Error as BackendError, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SerialNumber,
};

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

    #[test]
    fn a_minted_ca_is_new_every_time() {
        let a = mint_ca("dev-123456", 1_795_651_200).unwrap();
        let b = mint_ca("dev-123456", 1_795_651_200).unwrap();
        assert_ne!(a.cert_pem, b.cert_pem, "serials and keys are random");
        assert!(a.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(a.key_pem.contains("PRIVATE KEY"));
    }
}

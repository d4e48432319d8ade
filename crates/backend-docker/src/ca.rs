//! The bottle CA: minted per bottle with rcgen, key 0600 in a 0700 directory.

use std::path::Path;

use crate::error::Result;
use crate::state::write_atomic;

pub use sidecar_contract::layout::{CA_CERT_FILE, CA_KEY_FILE};

pub use sidecar_contract::layout::AGENT_CA_FILE;

pub use bottle_ca::{BottleCa, CA_VALIDITY_DAYS, mint_ca, random_bytes};

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

//! Checksums that vendors build into their identifiers: a pattern match whose
//! checksum holds is far more likely to be the real thing than a look-alike
//! (GitHub's and npm's CRC32 suffix, Luhn for card numbers, ISO 13616 mod-97
//! for IBANs, Base58Check for Bitcoin addresses and WIF keys, BIP 173/350
//! for bech32 addresses). Pure functions over ASCII.

use sha2::{Digest, Sha256};

/// CRC-32 (IEEE 802.3, reflected), as zlib computes it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `value` in base 62 (digits, upper, lower), left-padded with `0` to `width`.
pub fn base62_padded(mut value: u64, width: usize) -> String {
    let mut digits = Vec::new();
    while value > 0 {
        digits.push(BASE62[(value % 62) as usize]);
        value /= 62;
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// GitHub's (and npm's) token format: `prefix_` + 30 random base62
/// characters + 6 characters of base62 CRC32 of those 30.
pub fn github_token_checksum_ok(token: &[u8]) -> bool {
    let Some(underscore) = token.iter().rposition(|&b| b == b'_') else {
        return false;
    };
    let body = &token[underscore + 1..];
    if body.len() != 36 {
        return false;
    }
    let (random, check) = body.split_at(30);
    base62_padded(u64::from(crc32(random)), 6).as_bytes() == check
}

/// The Luhn check of a digit string (separators ignored); false for fewer
/// than 12 digits or any other character.
pub fn luhn_ok(text: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut count = 0usize;
    for &b in text.iter().rev() {
        match b {
            b'0'..=b'9' => {
                let mut d = u32::from(b - b'0');
                if count % 2 == 1 {
                    d *= 2;
                    if d > 9 {
                        d -= 9;
                    }
                }
                sum += d;
                count += 1;
            }
            b' ' | b'-' => {}
            _ => return false,
        }
    }
    count >= 12 && sum.is_multiple_of(10)
}

/// ISO 13616 IBAN check: country code, two check digits, then the account;
/// moved to the end and read as a number, it is 1 modulo 97.
pub fn iban_ok(text: &[u8]) -> bool {
    let compact: Vec<u8> = text.iter().copied().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len())
        || !compact[..2].iter().all(u8::is_ascii_uppercase)
        || !compact[2..4].iter().all(u8::is_ascii_digit)
        || !compact
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return false;
    }
    if let Some(expected) = iban_length(&compact[..2])
        && expected != compact.len()
    {
        return false;
    }
    let mut remainder = 0u32;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        let value = if b.is_ascii_digit() {
            u32::from(b - b'0')
        } else {
            u32::from(b - b'A') + 10
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

/// IBAN lengths of the commonest countries (others: the generic 15..=34).
fn iban_length(country: &[u8]) -> Option<usize> {
    Some(match country {
        b"DE" => 22,
        b"GB" | b"IE" => 22,
        b"FR" | b"IT" | b"MC" => 27,
        b"ES" | b"SE" => 24,
        b"NL" => 18,
        b"BE" => 16,
        b"CH" | b"LI" => 21,
        b"AT" => 20,
        b"PL" => 28,
        b"PT" => 25,
        b"DK" | b"FI" => 18,
        b"NO" => 15,
        b"LU" => 20,
        _ => return None,
    })
}

const BASE58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Bitcoin's base58 decoded to bytes (leading `1`s are zero bytes); `None`
/// for a character outside the alphabet or more than 128 characters.
pub fn base58_decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() > 128 {
        return None;
    }
    let mut bytes: Vec<u8> = Vec::with_capacity(text.len());
    for &c in text {
        let mut carry = BASE58.iter().position(|&a| a == c)? as u32;
        for byte in bytes.iter_mut().rev() {
            carry += u32::from(*byte) * 58;
            *byte = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.insert(0, (carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let zeros = text.iter().take_while(|&&c| c == b'1').count();
    let mut out = vec![0u8; zeros];
    out.extend(bytes.into_iter().skip_while(|&b| b == 0));
    Some(out)
}

/// Base58Check: the payload (version byte first) whose last four bytes are
/// the start of its double SHA-256.
pub fn base58check_payload(text: &[u8]) -> Option<Vec<u8>> {
    let decoded = base58_decode(text)?;
    if decoded.len() < 5 {
        return None;
    }
    let (payload, check) = decoded.split_at(decoded.len() - 4);
    let digest = Sha256::digest(Sha256::digest(payload));
    (digest[..4] == *check).then(|| payload.to_vec())
}

/// A legacy (P2PKH `1…`, P2SH `3…`) Bitcoin address with a valid checksum.
pub fn bitcoin_base58_address_ok(text: &[u8]) -> bool {
    // Bitcoin (pay to key, to script, and their test-network forms),
    // Litecoin (`L`, `M`), Dogecoin (`D`, `9`/`A`) and Tron (`T`).
    base58check_payload(text).is_some_and(|p| {
        p.len() == 21
            && matches!(
                p[0],
                0x00 | 0x05 | 0x6f | 0xc4 | 0x30 | 0x32 | 0x1e | 0x16 | 0x41
            )
    })
}

/// A wallet-import-format private key (mainnet, compressed or not) with a
/// valid checksum.
pub fn wif_ok(text: &[u8]) -> bool {
    base58check_payload(text).is_some_and(|p| {
        matches!(p[0], 0x80 | 0xef) && (p.len() == 33 || (p.len() == 34 && p[33] == 0x01))
    })
}

/// An extended private key (`xprv`, `yprv`, `zprv`, `tprv`) with a valid checksum.
pub fn extended_private_key_ok(text: &[u8]) -> bool {
    base58check_payload(text).is_some_and(|p| p.len() == 78)
}

const BECH32: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

fn bech32_polymod(values: &[u8]) -> u32 {
    const GEN: [u32; 5] = [
        0x3b6a_57b2,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    let mut chk = 1u32;
    for &v in values {
        let top = chk >> 25;
        chk = ((chk & 0x01ff_ffff) << 5) ^ u32::from(v);
        for (i, g) in GEN.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

/// A bech32 (BIP 173) or bech32m (BIP 350) string with a valid checksum,
/// lower case, e.g. a `bc1…` address.
pub fn bech32_ok(text: &[u8]) -> bool {
    let Some(separator) = text.iter().rposition(|&b| b == b'1') else {
        return false;
    };
    let (hrp, data) = (&text[..separator], &text[separator + 1..]);
    if hrp.is_empty() || data.len() < 6 {
        return false;
    }
    let mut values: Vec<u8> = hrp.iter().map(|b| b >> 5).collect();
    values.push(0);
    values.extend(hrp.iter().map(|b| b & 31));
    for &c in data {
        let Some(v) = BECH32.iter().position(|&a| a == c) else {
            return false;
        };
        values.push(v as u8);
    }
    matches!(bech32_polymod(&values), 1 | 0x2bc8_30a3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn github_checksum_follows_the_published_scheme() {
        // A published test vector of the CRC32 base62 suffix.
        assert_eq!(
            base62_padded(u64::from(crc32(b"fIkRGaBu5PeKsznMzXQOg3kETH1Sgx")), 6),
            "2oIfSC"
        );
        assert!(github_token_checksum_ok(
            b"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"
        ));
        assert!(!github_token_checksum_ok(
            b"ghp_fIkRGaBu5PeKsznMzXQOg3kETH1Sgx2oIfSD"
        ));
        assert!(!github_token_checksum_ok(b"ghp_short"));
    }

    #[test]
    fn luhn() {
        assert!(luhn_ok(b"4111111111111111"));
        assert!(luhn_ok(b"4111 1111 1111 1111"));
        assert!(luhn_ok(b"378282246310005"));
        assert!(!luhn_ok(b"4111111111111112"));
        assert!(!luhn_ok(b"41111"));
        assert!(!luhn_ok(b"4111x111111111111"));
    }

    #[test]
    fn iban() {
        assert!(iban_ok(b"GB82WEST12345698765432"));
        assert!(iban_ok(b"DE89 3704 0044 0532 0130 00"));
        assert!(iban_ok(b"FR1420041010050500013M02606"));
        assert!(!iban_ok(b"GB82WEST12345698765433"));
        assert!(!iban_ok(b"DE89370400440532013000123"));
        assert!(!iban_ok(b"gb82west12345698765432"));
    }

    #[test]
    fn base58check() {
        // The genesis block's address and the textbook WIF example.
        assert!(bitcoin_base58_address_ok(
            b"1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"
        ));
        assert!(!bitcoin_base58_address_ok(
            b"1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb"
        ));
        assert!(wif_ok(
            b"5HueCGU8rMjxEXxiPuD5BDku4MkFqeZyd4dZ1jvhTVqvbTLvyTJ"
        ));
        assert!(!wif_ok(
            b"5HueCGU8rMjxEXxiPuD5BDku4MkFqeZyd4dZ1jvhTVqvbTLvyTK"
        ));
        assert!(!wif_ok(b"1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"));
        assert_eq!(base58_decode(b"0"), None);
    }

    #[test]
    fn bech32() {
        assert!(bech32_ok(b"bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"));
        assert!(bech32_ok(
            b"bc1p5d7rjq7g6rdk2yhzks9smlaqtedr4dekq08ge8ztwac72sfr9rusxg3297"
        ));
        assert!(!bech32_ok(b"bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5"));
        assert!(!bech32_ok(b"bc1"));
    }
}

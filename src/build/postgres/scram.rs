//! SCRAM-SHA-256 secrets as PostgreSQL stores them in pg_authid
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, RFC 5802
//! and RFC 7677), computed here so that initdb stores a secret whose salt
//! is chosen by pgkraft instead of drawn at random: PostgreSQL stores a
//! password that already has this form as it is.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// PostgreSQL's default `scram_iterations`.
pub const ITERATIONS: u32 = 4096;

/// PostgreSQL's salt length.
pub const SALT_LEN: usize = 16;

/// HMAC-SHA-256 of the concatenated `parts`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA256 with one output block: SCRAM's Hi().
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations)
}

/// A salt that is the same for the same user and password, so that builds
/// are reproducible. It is stretched like the secret itself: a password
/// guess costs as many iterations checked against the salt as against the
/// secret. What it gives away: images with the same user and password carry
/// the same secret.
pub fn reproducible_salt(user: &str, password: &str) -> [u8; SALT_LEN] {
    let mut label = b"pgkraft scram salt\0".to_vec();
    label.extend_from_slice(user.as_bytes());
    let stretched = hi(password.as_bytes(), &label, ITERATIONS);
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&stretched[..SALT_LEN]);
    salt
}

/// The stored secret for `password`. The password must be printable ASCII:
/// PostgreSQL normalizes other passwords with SASLprep first, which this
/// does not implement.
pub fn secret(password: &str, salt: &[u8], iterations: u32) -> Result<String, String> {
    if !password.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(
            "the password must be printable ASCII (PostgreSQL would normalize other \
             characters with SASLprep, which pgkraft does not reproduce)"
                .into(),
        );
    }
    let salted = hi(password.as_bytes(), salt, iterations);
    let client_key = hmac(&salted, &[b"Client Key"]);
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let server_key = hmac(&salted, &[b"Server Key"]);
    Ok(format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        BASE64.encode(salt),
        BASE64.encode(stored_key),
        BASE64.encode(server_key)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_rfc4231_case_2() {
        let mac = hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// RFC 7677's example exchange (user "user", password "pencil"): the
    /// server signature it gives is HMAC(ServerKey, AuthMessage).
    #[test]
    fn rfc7677_server_signature() {
        let salt = [
            0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36,
            0xfa, 0x81,
        ];
        assert_eq!(BASE64.encode(salt), "W22ZaJ0SNY7soEsUEjb6gQ==");
        let salted = hi(b"pencil", &salt, 4096);
        let server_key = hmac(&salted, &[b"Server Key"]);
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
                    r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                    s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
                    c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let sig = hmac(&server_key, &[auth.as_bytes()]);
        assert_eq!(
            BASE64.encode(sig),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    /// The stored secret for RFC 7677's example (password "pencil", its
    /// salt, 4096 iterations), as PostgreSQL stores it in pg_authid; the
    /// value was also computed apart from this code with Python's hashlib.
    #[test]
    fn rfc7677_stored_secret() {
        let salt = [
            0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36,
            0xfa, 0x81,
        ];
        assert_eq!(
            secret("pencil", &salt, 4096).unwrap(),
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
             WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
             wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
    }

    /// The salt of images built so far must not change: Python's
    /// `hashlib.pbkdf2_hmac("sha256", b"change-me",
    /// b"pgkraft scram salt\0postgres", 4096)[:16]`.
    #[test]
    fn reproducible_salt_is_stable() {
        assert_eq!(
            hex::encode(reproducible_salt("postgres", "change-me")),
            "702f36f27191a43e20a83034db94d982"
        );
    }

    #[test]
    fn reproducible_salt_depends_on_user_and_password() {
        let a = reproducible_salt("postgres", "pw");
        assert_eq!(a, reproducible_salt("postgres", "pw"));
        assert_ne!(a, reproducible_salt("other", "pw"));
        assert_ne!(a, reproducible_salt("postgres", "pw2"));
    }

    #[test]
    fn refuses_non_ascii() {
        assert!(secret("pässword", &[0; 16], 4096).is_err());
    }
}

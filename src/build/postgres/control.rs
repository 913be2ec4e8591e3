//! pg_control's identity fields, rewritten so that two initdb runs with
//! the same inputs give the same file.
//!
//! `global/pg_control` starts with ControlFileData: `system_identifier`
//! (uint64) first, and last `mock_authentication_nonce` (32 random bytes)
//! followed by a CRC-32C of everything before it. The structure's size
//! differs between major versions, so the CRC is located by checking each
//! aligned position: the one where the bytes so far hash to the stored
//! value. That also proves the file is what this code thinks it is.

/// MOCK_AUTH_NONCE_LEN in pg_control.h.
const NONCE_LEN: usize = 32;

/// CRC-32C (Castagnoli, the iSCSI polynomial), as PostgreSQL's COMP_CRC32C
/// computes it.
pub fn crc32c(data: &[u8]) -> u32 {
    const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    CRC32C.checksum(data)
}

/// The offset of the CRC field.
fn crc_offset(data: &[u8]) -> Option<usize> {
    // Ahead of the nonce there are at least a few dozen bytes of fields.
    (8 + NONCE_LEN..data.len().saturating_sub(4))
        .step_by(4)
        .find(|&o| {
            let stored = u32::from_le_bytes(data[o..o + 4].try_into().expect("4 bytes"));
            crc32c(&data[..o]) == stored
        })
}

/// Reads the system identifier.
#[cfg(test)]
fn system_identifier(data: &[u8]) -> Option<u64> {
    data.get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// Sets the system identifier and the nonce and recomputes the CRC.
pub fn rewrite(data: &mut [u8], system_identifier: u64, nonce: &[u8; 32]) -> Result<(), String> {
    let crc_at = crc_offset(data)
        .ok_or("no valid CRC found: not a pg_control file of a supported version")?;
    data[..8].copy_from_slice(&system_identifier.to_le_bytes());
    data[crc_at - NONCE_LEN..crc_at].copy_from_slice(nonce);
    let crc = crc32c(&data[..crc_at]);
    data[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        // RFC 3720, B.4: 32 bytes of zeros, of ones, ascending.
        assert_eq!(crc32c(&[0; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xff; 32]), 0x62a8_ab43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46dd_794e);
    }

    #[test]
    fn rewrite_finds_and_fixes_crc() {
        let mut f = vec![0u8; 8192];
        f[..8].copy_from_slice(&7u64.to_le_bytes());
        f[100] = 9;
        let crc_at = 296;
        f[crc_at - 32..crc_at].copy_from_slice(&[0xaa; 32]);
        let crc = crc32c(&f[..crc_at]);
        f[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        rewrite(&mut f, 42, &[1; 32]).unwrap();
        assert_eq!(system_identifier(&f), Some(42));
        assert_eq!(&f[crc_at - 32..crc_at], &[1; 32]);
        assert_eq!(crc_offset(&f), Some(crc_at));
    }
}

//! The listen backlog, as seen from the wire: Linux drops a SYN for a
//! listener whose accept queue is full (the client retransmits it later)
//! instead of refusing the connection. smoltcp would answer such a SYN with
//! a reset, so frames are screened here before the stack sees them.
//!
//! Pure packet inspection (IPv4/IPv6 without extension headers, TCP).

use super::addr::Ip;

/// A listener that takes no new connection now: (address or any, port).
pub type Full = (Option<Ip>, u16);

const TCP: u8 = 6;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// Whether `packet` (an IP packet) is a connection request (SYN without
/// ACK) for one of the `full` listeners.
pub fn drop_syn(packet: &[u8], full: &[Full]) -> bool {
    if full.is_empty() || packet.is_empty() {
        return false;
    }
    let (dst, tcp) = match packet[0] >> 4 {
        4 if packet.len() >= 20 && packet[9] == TCP => {
            let ihl = usize::from(packet[0] & 0xf) * 4;
            let a = [packet[16], packet[17], packet[18], packet[19]];
            (Ip::V4(a), packet.get(ihl..))
        }
        6 if packet.len() >= 40 && packet[6] == TCP => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&packet[24..40]);
            (Ip::V6(a), packet.get(40..))
        }
        _ => return false,
    };
    let Some(tcp) = tcp.filter(|t| t.len() >= 20) else {
        return false;
    };
    let port = u16::from_be_bytes([tcp[2], tcp[3]]);
    if tcp[13] & (SYN | ACK) != SYN {
        return false;
    }
    full.iter()
        .any(|&(ip, p)| p == port && ip.is_none_or(|ip| ip.unmapped() == dst.unmapped()))
}

/// The IP packet inside an Ethernet frame, if it carries one.
#[cfg_attr(test, allow(dead_code))]
pub fn ip_of_ethernet(frame: &[u8]) -> &[u8] {
    match frame.get(12..14) {
        Some([0x08, 0x00]) | Some([0x86, 0xdd]) => &frame[14..],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_tcp(dst: [u8; 4], port: u16, flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = TCP;
        p[16..20].copy_from_slice(&dst);
        p[22..24].copy_from_slice(&port.to_be_bytes());
        p[33] = flags;
        p
    }

    #[test]
    fn only_syns_to_full_listeners_are_dropped() {
        let full = [(None, 5432)];
        assert!(drop_syn(&v4_tcp([127, 0, 0, 1], 5432, SYN), &full));
        // SYN-ACK, ACK and other ports pass.
        assert!(!drop_syn(&v4_tcp([127, 0, 0, 1], 5432, SYN | ACK), &full));
        assert!(!drop_syn(&v4_tcp([127, 0, 0, 1], 5432, ACK), &full));
        assert!(!drop_syn(&v4_tcp([127, 0, 0, 1], 5433, SYN), &full));
        assert!(!drop_syn(&v4_tcp([127, 0, 0, 1], 5432, SYN), &[]));
        // A listener on one address does not cover another.
        let one = [(Some(Ip::V4([127, 0, 0, 1])), 80)];
        assert!(drop_syn(&v4_tcp([127, 0, 0, 1], 80, SYN), &one));
        assert!(!drop_syn(&v4_tcp([10, 0, 2, 15], 80, SYN), &one));
        assert!(!drop_syn(&[0x45, 0, 0], &full));
    }

    #[test]
    fn v6_and_ethernet_framing() {
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[6] = TCP;
        p[39] = 1;
        p[42..44].copy_from_slice(&80u16.to_be_bytes());
        p[53] = SYN;
        assert!(drop_syn(&p, &[(None, 80)]));
        let mut f = vec![0u8; 14];
        f[12] = 0x86;
        f[13] = 0xdd;
        f.extend_from_slice(&p);
        assert_eq!(ip_of_ethernet(&f).len(), 60);
        assert!(ip_of_ethernet(&[0u8; 20]).is_empty());
    }
}

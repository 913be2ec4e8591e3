//! The loopback device (127.0.0.1, ::1): packets the stack sends come back
//! in on the next poll. smoltcp's own Loopback, plus the backlog screen
//! (filter.rs) on the way in.

use super::filter::{self, Full};
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// The largest packet (Linux's lo MTU is 64 KiB; this keeps copies small).
const MTU: usize = 65535;

#[derive(Default)]
pub struct Loopback {
    queue: VecDeque<Vec<u8>>,
    /// Listeners whose SYNs are dropped now (see filter.rs).
    pub full: Vec<Full>,
}

pub struct Rx(Vec<u8>);
pub struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = alloc::vec![0u8; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Loopback {
    pub fn pending(&self) -> bool {
        !self.queue.is_empty()
    }
}

impl Device for Loopback {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = MTU;
        // Packets never leave memory: computing and verifying checksums on
        // every 64 KiB loopback packet would be work for nothing.
        c.checksum = smoltcp::phy::ChecksumCapabilities::ignored();
        c
    }

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        loop {
            let p = self.queue.pop_front()?;
            if filter::drop_syn(&p, &self.full) {
                continue;
            }
            return Some((Rx(p), Tx(&mut self.queue)));
        }
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.queue))
    }
}

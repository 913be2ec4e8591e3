//! The virtual Ethernet link between the guest and the runner's stack, as
//! smoltcp sees it: two bounded frame queues. Frames the guest sent wait
//! in `from_guest` until the stack polls; frames the stack sends wait in
//! `to_guest` until the virtio-net device puts them in the guest's RX
//! buffers. When `to_guest` is full the stack is told there is no
//! transmit slot (it keeps its data and tries later), so a guest that
//! posts no buffers stalls the stack instead of growing this queue.

use std::collections::VecDeque;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Ethernet MTU (payload); a frame is at most this plus its 14-byte header.
pub(crate) const MTU: usize = 1500;
pub(crate) const MAX_FRAME: usize = MTU + 14;
/// Frames either queue holds at most.
pub(crate) const QUEUE_FRAMES: usize = 64;
/// Replies the stack makes while receiving (ACKs, ARP answers) may go
/// past [`QUEUE_FRAMES`] up to this many; beyond it they are dropped.
pub(crate) const HARD_LIMIT: usize = 2 * QUEUE_FRAMES;

#[derive(Default)]
pub(crate) struct Link {
    pub from_guest: VecDeque<Vec<u8>>,
    pub to_guest: VecDeque<Vec<u8>>,
    /// Frames dropped: too long from the guest, or replies past the hard limit.
    pub dropped: u64,
}

impl Link {
    /// Takes a guest frame unless the queue is full.
    pub(crate) fn push_from_guest(&mut self, frame: &[u8]) -> bool {
        if self.from_guest.len() >= QUEUE_FRAMES {
            return false;
        }
        if frame.len() > MAX_FRAME {
            self.dropped += 1;
        } else {
            self.from_guest.push_back(frame.to_vec());
        }
        true
    }

    /// Room for another guest frame ([`super::NetBackend::can_send`]).
    pub(crate) fn can_send(&self) -> bool {
        self.from_guest.len() < QUEUE_FRAMES
    }

    /// Room for another frame toward the guest: a backend stops taking
    /// frames from its side while this is false.
    pub(crate) fn can_fill(&self) -> bool {
        self.to_guest.len() < QUEUE_FRAMES
    }

    /// The next frame for the guest ([`super::NetBackend::recv`]).
    pub(crate) fn recv(&mut self) -> Option<Vec<u8>> {
        self.to_guest.pop_front()
    }

    /// Bytes of frames held, both ways.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.from_guest
            .iter()
            .chain(&self.to_guest)
            .map(Vec::len)
            .sum()
    }
}

pub(crate) struct Rx(Vec<u8>);
pub(crate) struct Tx<'a> {
    link: &'a mut Link,
}

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let r = f(&mut frame);
        if self.link.to_guest.len() < HARD_LIMIT {
            self.link.to_guest.push_back(frame);
        } else {
            self.link.dropped += 1;
        }
        r
    }
}

impl Device for Link {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.from_guest.pop_front()?;
        Some((Rx(frame), Tx { link: self }))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        (self.to_guest.len() < QUEUE_FRAMES).then_some(Tx { link: self })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps.max_burst_size = Some(QUEUE_FRAMES);
        caps
    }
}

//! The virtio-net device: found by probing the virtio-mmio slots
//! (pgkraft_abi::VIRTIO_MMIO_*) the first time a socket is made, never at
//! boot, so images without sockets pay nothing. Empty slots cost one read
//! (the magic) under our runner, three under QEMU microvm.
//!
//! The driver is the `virtio-drivers` crate (split virtqueues, VERSION_1,
//! MAC); this file makes it a smoltcp Ethernet device. Frames are copied
//! out of the receive ring at once so the ring is refilled immediately.

use super::filter::{self, Full};
use crate::arch::virtio::{IdentityHal, mmio_read32, transport};
use alloc::vec::Vec;
use pgkraft_abi::{VIRTIO_MMIO_BASE, VIRTIO_MMIO_SLOT_SIZE, VIRTIO_MMIO_SLOTS};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use virtio_drivers::device::net::VirtIONet;
use virtio_drivers::transport::mmio::MmioTransport;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const DEVICE_NET: u32 = 1;
const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
/// Receive and transmit ring sizes (power of two).
const QUEUE: usize = 16;
/// Ethernet MTU 1500 + header; the driver adds the virtio-net header.
const FRAME: usize = 1514;
const BUF_LEN: usize = 2048;

pub struct VirtioNet {
    net: VirtIONet<IdentityHal, MmioTransport<'static>, QUEUE>,
    pub full: Vec<Full>,
}

/// The first virtio-net device, if the VM has one.
pub fn probe() -> Option<VirtioNet> {
    for slot in 0..VIRTIO_MMIO_SLOTS {
        let base = VIRTIO_MMIO_BASE + slot * VIRTIO_MMIO_SLOT_SIZE;
        if mmio_read32(base + REG_MAGIC) != MAGIC
            || mmio_read32(base + REG_VERSION) != VERSION
            || mmio_read32(base + REG_DEVICE_ID) != DEVICE_NET
        {
            continue;
        }
        let Some(t) = transport(base, VIRTIO_MMIO_SLOT_SIZE) else {
            continue;
        };
        match VirtIONet::new(t, BUF_LEN) {
            Ok(net) => {
                return Some(VirtioNet {
                    net,
                    full: Vec::new(),
                });
            }
            Err(e) => crate::log!("libos: virtio-net in slot {slot}: {e:?}"),
        }
    }
    None
}

impl VirtioNet {
    pub fn mac(&self) -> [u8; 6] {
        self.net.mac_address()
    }

    pub fn pending(&self) -> bool {
        self.net.can_recv()
    }
}

pub struct Rx(Vec<u8>);
pub struct Tx<'a>(&'a mut VirtIONet<IdentityHal, MmioTransport<'static>, QUEUE>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut tx = self.0.new_tx_buffer(len);
        let r = f(tx.packet_mut());
        if let Err(e) = self.0.send(tx) {
            crate::log!("libos: virtio-net send: {e:?}");
        }
        r
    }
}

impl Device for VirtioNet {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = FRAME;
        c
    }

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        loop {
            if !self.net.can_recv() {
                return None;
            }
            let buf = self.net.receive().ok()?;
            let frame = buf.packet().to_vec();
            let _ = self.net.recycle_rx_buffer(buf);
            if filter::drop_syn(filter::ip_of_ethernet(&frame), &self.full) {
                continue;
            }
            return Some((Rx(frame), Tx(&mut self.net)));
        }
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        self.net.can_send().then_some(Tx(&mut self.net))
    }
}

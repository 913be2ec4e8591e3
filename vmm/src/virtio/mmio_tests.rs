//! The transport driven as a guest driver would, with a real echo backend.

use virtio_queue::QueueOwnedT;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::virtio::read_config_bytes;
use crate::virtio::test_guest::{self, F_NEXT, F_WRITE, QSIZE, Ring};

const ECHO_TYPE: u32 = 42;
/// Device-specific features the echo device offers.
const ECHO_F_A: u64 = 1 << 0;
const ECHO_F_B: u64 = 1 << 5;
const MAX_SIZES: [u16; 2] = [8, 4];

/// A real backend: copies each chain's readable bytes into its
/// writable buffers and reports how many it wrote.
#[derive(Debug, Default)]
struct Echo {
    config: [u8; 8],
    activated: Option<u64>,
    resets: u32,
    notified: Vec<usize>,
}

impl VirtioDevice for Echo {
    fn device_type(&self) -> u32 {
        ECHO_TYPE
    }
    fn features(&self) -> u64 {
        ECHO_F_A | ECHO_F_B
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &MAX_SIZES
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            if let Some(slot) = self.config.get_mut(offset as usize + i) {
                *slot = b;
            }
        }
    }
    fn activate(&mut self, _ctx: &mut VirtioCtx, features: u64) -> Result<(), DeviceError> {
        self.activated = Some(features);
        Ok(())
    }
    fn notify(&mut self, ctx: &mut VirtioCtx, queue: usize) -> Result<(), DeviceError> {
        self.notified.push(queue);
        let mem = ctx.mem;
        let q = &mut ctx.queues[queue];
        let chains: Vec<_> = q.iter(mem)?.collect();
        if chains.is_empty() {
            return Ok(());
        }
        for chain in chains {
            let head = chain.head_index();
            let (mut input, mut out) = (Vec::new(), Vec::new());
            for desc in chain {
                if desc.is_write_only() {
                    out.push(desc);
                } else {
                    let mut buf = vec![0; desc.len() as usize];
                    mem.read_slice(&mut buf, desc.addr())?;
                    input.extend(buf);
                }
            }
            let mut written = 0;
            for desc in out {
                let n = (desc.len() as usize).min(input.len() - written);
                mem.write_slice(&input[written..written + n], desc.addr())?;
                written += n;
            }
            q.add_used(mem, head, written as u32)?;
        }
        ctx.signal_used();
        Ok(())
    }
    fn reset(&mut self) {
        self.activated = None;
        self.resets += 1;
    }
}

const MEM_SIZE: usize = 0x10000;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const BUFS: u64 = 0x4000;
const RINGS: &[Ring] = &[Ring {
    desc: DESC,
    avail: AVAIL,
    used: USED,
}];

type Guest = test_guest::Guest<Echo>;

impl Guest {
    fn new() -> Guest {
        Guest::with(MmioTransport::new(Echo::default()).unwrap())
    }

    fn with(t: MmioTransport<Echo>) -> Guest {
        Guest::attach(t, MEM_SIZE, RINGS)
    }

    /// Queue 0 at DESC/AVAIL/USED with QSIZE entries.
    fn setup_queue0(&mut self) {
        self.write(QUEUE_SEL, 0);
        assert_eq!(self.read(QUEUE_READY), 0);
        assert_eq!(self.read(QUEUE_NUM_MAX), 8);
        self.setup_queue(0);
    }

    /// The whole init sequence, with features A and VERSION_1.
    fn init(&mut self) {
        assert!(self.negotiate(ECHO_F_A | F_VERSION_1));
        self.setup_queue0();
        self.add_status(STATUS_DRIVER_OK);
        assert!(self.t.active());
    }
}

#[test]
fn identification_registers() {
    let mut g = Guest::new();
    assert_eq!(g.read(MAGIC_VALUE), 0x7472_6976);
    assert_eq!(g.read(MAGIC_VALUE).to_le_bytes(), *b"virt");
    assert_eq!(g.read(VERSION_REG), 2);
    assert_eq!(g.read(DEVICE_ID), ECHO_TYPE);
    assert_eq!(g.read(VENDOR_ID_REG), VENDOR_ID);
    assert_eq!(g.device_features(), ECHO_F_A | ECHO_F_B | F_VERSION_1);
    g.write(DEVICE_FEATURES_SEL, 2);
    assert_eq!(g.read(DEVICE_FEATURES), 0);
    for (sel, max) in [(0, 8), (1, 4), (2, 0), (u32::MAX, 0)] {
        g.write(QUEUE_SEL, sel);
        assert_eq!(g.read(QUEUE_NUM_MAX), max, "QueueSel {sel}");
        assert_eq!(g.read(QUEUE_READY), 0);
    }
    assert_eq!(g.read(STATUS), 0);
    assert_eq!(g.read(INTERRUPT_STATUS), 0);
    assert_eq!(g.read(CONFIG_GENERATION), 0);
}

#[test]
fn init_sequence_activates_the_device() {
    let mut g = Guest::new();
    g.write(STATUS, 0);
    assert_eq!(g.read(STATUS), 0);
    g.add_status(STATUS_ACKNOWLEDGE);
    assert_eq!(g.read(STATUS), STATUS_ACKNOWLEDGE);
    g.add_status(STATUS_DRIVER);
    assert_eq!(g.read(STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    let offered = g.device_features();
    let wanted = ECHO_F_A | F_VERSION_1;
    assert_eq!(offered & wanted, wanted);
    g.write_features(wanted);
    g.add_status(STATUS_FEATURES_OK);
    assert_eq!(
        g.read(STATUS),
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK
    );
    // Features are fixed from here on.
    g.write_features(offered);
    assert_eq!(g.t.state().driver_features, wanted);

    g.setup_queue0();
    assert_eq!(g.t.device().activated, None);
    g.add_status(STATUS_DRIVER_OK);
    assert_eq!(g.read(STATUS) & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
    assert!(g.t.active());
    assert_eq!(g.t.device().activated, Some(wanted));
    let state = g.t.state();
    let q0 = state.queues[0];
    assert_eq!(
        (
            q0.ready,
            q0.size,
            q0.desc_table,
            q0.avail_ring,
            q0.used_ring
        ),
        (true, QSIZE, DESC, AVAIL, USED)
    );
    assert!(!q0.event_idx_enabled);
    assert!(!state.queues[1].ready);
    // Queue registers are frozen once the device runs.
    g.write(QUEUE_NUM, 4);
    assert_eq!(g.t.state().queues[0].size, QSIZE);
}

#[test]
fn feature_sets_the_device_does_not_offer_are_refused() {
    let mut g = Guest::new();
    // A bit the device does not offer.
    assert!(!g.negotiate(ECHO_F_A | F_VERSION_1 | 1 << 7));
    assert_eq!(g.read(STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    // A legacy driver: no VERSION_1.
    assert!(!g.negotiate(ECHO_F_A));
    // Without FEATURES_OK neither queues nor DRIVER_OK are taken.
    g.write(QUEUE_NUM, 4);
    assert_eq!(g.t.state().queues[0].size, 8);
    g.add_status(STATUS_DRIVER_OK);
    assert_eq!(g.read(STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    assert_eq!(g.t.device().activated, None);
    // After a reset, an acceptable set goes through.
    assert!(g.negotiate(ECHO_F_B | F_VERSION_1));
    assert_eq!(g.t.state().driver_features, ECHO_F_B | F_VERSION_1);
}

#[test]
fn status_changes_out_of_order_are_ignored() {
    let mut g = Guest::new();
    g.write(STATUS, STATUS_DRIVER);
    assert_eq!(g.read(STATUS), 0);
    g.write(
        STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK,
    );
    // ACKNOWLEDGE and DRIVER in order; DRIVER_OK needs FEATURES_OK.
    assert_eq!(g.read(STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    // Clearing a bit takes a reset.
    g.write(STATUS, STATUS_ACKNOWLEDGE);
    assert_eq!(g.read(STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    // DriverFeatures before DRIVER is ignored.
    g.write(STATUS, 0);
    g.write(DRIVER_FEATURES, 0xffff_ffff);
    assert_eq!(g.t.state().driver_features, 0);
    // FAILED sticks until a reset.
    g.add_status(STATUS_ACKNOWLEDGE);
    g.add_status(STATUS_FAILED);
    g.add_status(STATUS_DRIVER);
    assert_eq!(g.read(STATUS), STATUS_ACKNOWLEDGE | STATUS_FAILED);
    g.write(STATUS, 0);
    assert_eq!(g.read(STATUS), 0);
    // Invalid queue sizes are refused.
    assert!(g.negotiate(F_VERSION_1));
    g.write(QUEUE_NUM, 3);
    g.write(QUEUE_NUM, 16);
    g.write(QUEUE_NUM, 0x1_0004);
    assert_eq!(g.t.state().queues[0].size, 8);
    g.write(QUEUE_NUM, 2);
    assert_eq!(g.t.state().queues[0].size, 2);
    // Misaligned ring addresses are refused; the halves combine.
    g.write(QUEUE_DESC_LOW, 0x1008);
    g.write(QUEUE_DRIVER_LOW, 0x2001);
    g.write(QUEUE_DEVICE_LOW, 0x3002);
    g.write(QUEUE_DEVICE_HIGH, 0x5);
    let q = g.t.state().queues[0];
    assert_eq!((q.desc_table, q.avail_ring), (0, 0));
    assert_eq!(q.used_ring, 0x5_0000_0000);
    g.write(QUEUE_DESC_LOW, 0x1010);
    g.write(QUEUE_DESC_HIGH, 0x1);
    assert_eq!(g.t.state().queues[0].desc_table, 0x1_0000_1010);
    // QueueNotify before DRIVER_OK does not reach the device.
    g.write(QUEUE_READY, 1);
    g.write(QUEUE_NOTIFY, 0);
    assert!(g.t.device().notified.is_empty());
}

#[test]
fn echo_round_trip_through_the_rings() {
    let mut g = Guest::new();
    g.init();
    // Chain 0: two readable buffers, one writable one.
    g.put(BUFS, b"hello, ");
    g.put(BUFS + 0x100, b"virtio");
    g.desc(0, 0, BUFS, 7, F_NEXT, 1);
    g.desc(0, 1, BUFS + 0x100, 6, F_NEXT, 2);
    g.desc(0, 2, BUFS + 0x200, 64, F_WRITE, 0);
    // Chain 3: one readable buffer, its echo split over two writable ones.
    g.put(BUFS + 0x300, b"0123456789");
    g.desc(0, 3, BUFS + 0x300, 10, F_NEXT, 5);
    g.desc(0, 5, BUFS + 0x400, 4, F_NEXT | F_WRITE, 6);
    g.desc(0, 6, BUFS + 0x500, 16, F_WRITE, 0);
    g.make_available(0, 0);
    g.make_available(0, 3);
    g.write(QUEUE_NOTIFY, 0);

    assert_eq!(g.t.device().notified, [0]);
    assert_eq!(g.used_idx(0), 2);
    assert_eq!(g.used(0, 0), (0, 13));
    assert_eq!(g.used(0, 1), (3, 10));
    assert_eq!(g.bytes(BUFS + 0x200, 14), b"hello, virtio\0");
    assert_eq!(g.bytes(BUFS + 0x400, 4), b"0123");
    assert_eq!(g.bytes(BUFS + 0x500, 7), b"456789\0");
    assert_eq!(g.read(INTERRUPT_STATUS), INT_USED_RING);
    g.write(INTERRUPT_ACK, INT_USED_RING);
    assert_eq!(g.read(INTERRUPT_STATUS), 0);

    // A kick with nothing new uses nothing; kicks of queues not set
    // up, or not there, do not reach the device.
    g.write(QUEUE_NOTIFY, 0);
    g.write(QUEUE_NOTIFY, 1);
    g.write(QUEUE_NOTIFY, 7);
    assert_eq!(g.t.device().notified, [0, 0]);
    assert_eq!(g.used_idx(0), 2);
    assert_eq!(g.read(INTERRUPT_STATUS), 0);
}

#[test]
fn reset_clears_everything() {
    let mut g = Guest::new();
    g.init();
    g.put(BUFS, b"x");
    g.desc(0, 0, BUFS, 1, F_NEXT, 1);
    g.desc(0, 1, BUFS + 0x100, 1, F_WRITE, 0);
    g.make_available(0, 0);
    g.write(QUEUE_NOTIFY, 0);
    g.write(QUEUE_SEL, 1);
    g.write(DEVICE_FEATURES_SEL, 1);
    assert_eq!(g.read(INTERRUPT_STATUS), INT_USED_RING);
    let resets = g.t.device().resets;

    g.write(STATUS, 0);
    assert_eq!(g.read(STATUS), 0);
    assert_eq!(g.read(INTERRUPT_STATUS), 0);
    assert!(!g.t.active());
    assert_eq!(g.t.device().activated, None);
    assert_eq!(g.t.device().resets, resets + 1);
    let fresh = MmioTransport::new(Echo::default()).unwrap().state();
    assert_eq!(g.t.state(), fresh);
    g.write(QUEUE_SEL, 0);
    assert_eq!(g.read(QUEUE_READY), 0);
    assert_eq!(g.read(QUEUE_NUM_MAX), 8);
    // The device is not reached until set up again.
    g.write(QUEUE_NOTIFY, 0);
    assert_eq!(g.t.device().notified, [0]);
}

#[test]
fn bad_accesses_are_ignored() {
    let mut g = Guest::new();
    for (offset, len) in [(MAGIC_VALUE, 1), (MAGIC_VALUE, 2), (MAGIC_VALUE, 8), (2, 4)] {
        let mut data = vec![0xaa; len];
        g.access(offset, &mut data, false);
        assert_eq!(data, vec![0; len], "{len} bytes at {offset:#x}");
    }
    // Unknown, legacy (QueuePFN) and write-only registers read 0.
    for offset in [
        0x0c0,
        0x040,
        QUEUE_NUM,
        QUEUE_DESC_LOW,
        QUEUE_NOTIFY,
        0xfc - 4,
    ] {
        assert_eq!(g.read(offset), 0, "offset {offset:#x}");
    }
    // Writes to read-only or unknown registers, or not 32 bits wide,
    // change nothing.
    g.write(MAGIC_VALUE, 0);
    g.write(0x040u64, 1);
    g.access(STATUS, &mut [STATUS_ACKNOWLEDGE as u8], true);
    g.access(
        STATUS,
        &mut [STATUS_ACKNOWLEDGE as u8, 0, 0, 0, 0, 0, 0, 0],
        true,
    );
    g.access(STATUS + 1, &mut [STATUS_ACKNOWLEDGE as u8, 0, 0, 0], true);
    assert_eq!(g.read(MAGIC_VALUE), MAGIC);
    assert_eq!(g.read(STATUS), 0);
    assert_eq!(
        g.t.state(),
        MmioTransport::new(Echo::default()).unwrap().state()
    );
    // Each is logged once: the set of logged mistakes stays small.
    let logged = g.t.logged.len();
    for _ in 0..3 {
        g.read(0x0c0u64);
        g.write(0x040u64, 1);
    }
    assert_eq!(g.t.logged.len(), logged);
}

#[test]
fn config_space_any_width_and_generation() {
    let mut g = Guest::new();
    g.t.device_mut().config = [1, 2, 3, 4, 5, 6, 7, 8];
    let mut b = [0u8; 1];
    g.access(CONFIG + 2, &mut b, false);
    assert_eq!(b, [3]);
    let mut w = [0u8; 2];
    g.access(CONFIG + 6, &mut w, false);
    assert_eq!(w, [7, 8]);
    assert_eq!(g.read(CONFIG + 4), u32::from_le_bytes([5, 6, 7, 8]));
    assert_eq!(g.read(CONFIG + 8), 0);
    g.access(CONFIG + 1, &mut [0xee, 0xff], true);
    assert_eq!(g.t.device().config, [1, 0xee, 0xff, 4, 5, 6, 7, 8]);

    // A change before DRIVER_OK bumps the generation only; after, it
    // also records the configuration interrupt.
    g.t.config_changed();
    assert_eq!(g.read(CONFIG_GENERATION), 1);
    assert_eq!(g.read(INTERRUPT_STATUS), 0);
    g.init();
    g.t.config_changed();
    assert_eq!(g.read(CONFIG_GENERATION), 2);
    assert_eq!(g.read(INTERRUPT_STATUS), INT_CONFIG);
}

#[test]
fn a_queue_outside_ram_makes_the_device_need_a_reset() {
    let mut g = Guest::new();
    assert!(g.negotiate(F_VERSION_1));
    g.setup_queue0();
    g.write(QUEUE_READY, 0);
    g.write(QUEUE_DEVICE_LOW, 0);
    g.write(QUEUE_DEVICE_HIGH, 1); // 4 GiB: past guest RAM.
    g.write(QUEUE_READY, 1);
    g.add_status(STATUS_DRIVER_OK);
    let status = g.read(STATUS);
    assert_eq!(status & STATUS_NEEDS_RESET, STATUS_NEEDS_RESET);
    assert_eq!(g.read(INTERRUPT_STATUS), INT_CONFIG);
    assert!(!g.t.active());
    assert_eq!(g.t.device().activated, None);
    g.write(QUEUE_NOTIFY, 0);
    assert!(g.t.device().notified.is_empty());
    // The driver's usual write-back of Status (with NEEDS_RESET) is fine,
    // and a reset recovers.
    g.write(STATUS, status);
    g.init();
    assert_eq!(g.read(STATUS) & STATUS_NEEDS_RESET, 0);
}

#[test]
fn a_broken_ring_makes_the_device_need_a_reset() {
    let mut g = Guest::new();
    g.init();
    // The driver claims more new entries than the queue holds.
    g.mem.write_obj(QSIZE + 1, GuestAddress(AVAIL + 2)).unwrap();
    g.write(QUEUE_NOTIFY, 0);
    assert_eq!(g.read(STATUS) & STATUS_NEEDS_RESET, STATUS_NEEDS_RESET);
    assert_eq!(g.read(INTERRUPT_STATUS), INT_CONFIG);
    g.write(QUEUE_NOTIFY, 0);
    assert_eq!(g.t.device().notified, [0]);
}

#[test]
fn restored_state_continues_the_queue() {
    let mut g = Guest::new();
    g.init();
    g.put(BUFS, b"before");
    g.desc(0, 0, BUFS, 6, F_NEXT, 1);
    g.desc(0, 1, BUFS + 0x100, 16, F_WRITE, 0);
    g.make_available(0, 0);
    g.write(QUEUE_NOTIFY, 0);
    assert_eq!(g.used_idx(0), 1);

    let json = serde_json::to_string(&g.t.state()).unwrap();
    let state: MmioState = serde_json::from_str(&json).unwrap();
    assert_eq!(state, g.t.state());
    assert_eq!(state.version, MMIO_STATE_VERSION);
    let t = MmioTransport::restore(Echo::default(), state, &g.mem).unwrap();
    let Guest { mem, .. } = std::mem::replace(&mut g, Guest::with(t));
    g.mem = mem; // The same guest RAM, as a snapshot restores it.
    assert_eq!(g.t.device().activated, Some(ECHO_F_A | F_VERSION_1));
    assert!(g.t.active());
    assert_eq!(
        g.read(STATUS),
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK
    );
    assert_eq!(g.read(INTERRUPT_STATUS), INT_USED_RING);

    // The restored device serves only what is new, into the next used slot.
    g.put(BUFS + 0x200, b"after");
    g.desc(0, 2, BUFS + 0x200, 5, F_NEXT, 3);
    g.desc(0, 3, BUFS + 0x300, 16, F_WRITE, 0);
    g.make_available(0, 2);
    g.write(QUEUE_NOTIFY, 0);
    assert_eq!(g.t.device().notified, [0]);
    assert_eq!(g.used_idx(0), 2);
    assert_eq!(g.used(0, 0), (0, 6));
    assert_eq!(g.used(0, 1), (2, 5));
    assert_eq!(g.bytes(BUFS + 0x300, 5), b"after");

    // A transport that was not active is restored without activating.
    let idle = MmioTransport::new(Echo::default()).unwrap().state();
    let t = MmioTransport::restore(Echo::default(), idle, &g.mem).unwrap();
    assert_eq!(t.device().activated, None);
}

#[test]
fn restore_refuses_foreign_states() {
    let mut g = Guest::new();
    g.init();
    let good = g.t.state();

    let mut other = good.clone();
    other.version = MMIO_STATE_VERSION + 1;
    let err = MmioTransport::restore(Echo::default(), other, &g.mem).unwrap_err();
    assert!(matches!(
        err,
        TransportError::Version {
            found: 2,
            expected: 1
        }
    ));
    let text = err.to_string();
    assert!(
        text.contains("version 2") && text.contains("version 1"),
        "{text}"
    );

    let mut other = good.clone();
    other.device_type = 1;
    let err = MmioTransport::restore(Echo::default(), other, &g.mem).unwrap_err();
    assert!(matches!(
        err,
        TransportError::DeviceType {
            found: 1,
            expected: ECHO_TYPE
        }
    ));

    let mut other = good.clone();
    other.queues.pop();
    let err = MmioTransport::restore(Echo::default(), other, &g.mem).unwrap_err();
    assert!(matches!(
        err,
        TransportError::QueueCount {
            found: 1,
            expected: 2
        }
    ));

    let mut other = good.clone();
    other.queues[0].size = 3;
    let err = MmioTransport::restore(Echo::default(), other, &g.mem).unwrap_err();
    assert!(
        matches!(err, TransportError::Queue { index: 0, .. }),
        "{err}"
    );

    let mut other = good.clone();
    other.driver_features |= 1 << 9;
    let err = MmioTransport::restore(Echo::default(), other, &g.mem).unwrap_err();
    assert!(matches!(err, TransportError::Features { .. }), "{err}");

    let mut other = good;
    other.queues[0].used_ring = 1 << 32;
    let err = MmioTransport::restore(Echo::default(), other, &g.mem).unwrap_err();
    assert!(
        matches!(err, TransportError::Queue { index: 0, .. }),
        "{err}"
    );
}

#[test]
fn queue_sizes_must_be_powers_of_two() {
    let err = MmioTransport::new(crate::virtio::tests::Inert {
        kind: 9,
        queues: &[16, 12],
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::QueueMax {
                index: 1,
                max: 12,
                ..
            }
        ),
        "{err}"
    );
}

//! virtio-9p (device type 9): the data volume, a host directory served at
//! file level with 9P2000.L (docs/ARCHITECTURE.md §4, "Volume"). One
//! request queue; each request is a descriptor chain, the T-message in its
//! device-readable buffers and room for the R-message in its
//! device-writable ones. Configuration space: `tag_len: u16` (LE), then
//! the mount tag's bytes; feature VIRTIO_9P_MOUNT_TAG (bit 0) is offered.
//! The same layout as QEMU's `virtio-9p-device`, so one guest driver
//! serves both.
//!
//! **When requests are served.** A notify is answered while its VM exit
//! is handled, on the vCPU thread (file I/O and fsync included: the guest
//! waits for its answer anyway); so is `hc::WAIT`, which stands for a
//! notify of every queue. The runner also serves the device from a worker
//! thread (`worker.rs`, as the network's), which after a request keeps
//! looking at the ring for a while: with [`VirtioP9::worked`] the device
//! then sets VRING_USED_F_NO_NOTIFY, so a driver that honours it (any
//! virtio driver without EVENT_IDX does) publishes its next request
//! without a notify and polls the used ring: no VM exit (~31 µs on PVM)
//! while requests follow each other. When the worker stops looking it
//! clears the flag and serves what came in between ([`VirtioDevice::settle`]).
//!
//! **Tfsync is answered later**, by a thread of `p9/syncer.rs` (the
//! host's disk may take milliseconds): the device goes on with the next
//! requests, and the answer is put in the used ring when the sync is
//! done, out of order (the guest's driver matches answers by chain).
//!
//! Messages are copied through two buffers of the device (the request in,
//! the answer out): a memcpy of 8 KiB costs well under a microsecond
//! against the exit, and the server then never touches guest memory.

use crate::placement::Placement;
use std::path::Path;

use pgkraft_abi::p9::{self as wire, Msg};
use virtio_bindings::virtio_ids::VIRTIO_ID_9P;
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::{DeviceError, VirtioCtx, VirtioDevice, read_config_bytes};
use crate::p9::syncer::Syncer;
use crate::p9::{MAX_MSIZE, Server, VolumeError};

/// VIRTIO_9P_MOUNT_TAG: the configuration space holds the mount tag.
pub(crate) const F_MOUNT_TAG: u64 = 1 << 0;
/// The mount tag's longest length (QEMU's limit too).
pub(crate) const MAX_TAG_LEN: usize = 255;
const QUEUE_SIZES: [u16; 1] = [128];
const REQUESTS: usize = 0;

/// Request counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct P9Stats {
    pub requests: u64,
    /// Requests longer than the message size, answered Rlerror(EMSGSIZE).
    pub oversized: u64,
}

pub(crate) struct VirtioP9 {
    server: Server,
    /// `tag_len` and the tag.
    config: Vec<u8>,
    /// The request being served, copied out of guest memory.
    req: Vec<u8>,
    /// The answer, [`MAX_MSIZE`] bytes, allocated once.
    resp: Vec<u8>,
    active: bool,
    /// Served by a worker that looks at the ring after each request: say
    /// so in the used ring's flags (see the module docs).
    suppress: bool,
    /// Requests were served since [`VirtioDevice::take_moved`].
    moved: bool,
    /// Tfsyncs being done on other threads.
    syncer: Syncer<Pending>,
    /// Bumped at each reset: syncs of an earlier session answer nobody.
    session: u64,
    pub stats: P9Stats,
}

/// Where a Tfsync's answer goes once its sync is done.
struct Pending {
    head: u16,
    tag: u16,
    writable: Vec<(GuestAddress, usize)>,
    session: u64,
}

impl VirtioP9 {
    /// Serves directory `dir` under mount tag `tag`; its sync threads run
    /// where `placement` puts helpers.
    pub(crate) fn new(
        dir: &Path,
        tag: &str,
        placement: &Placement,
    ) -> Result<VirtioP9, VolumeError> {
        if tag.is_empty() || tag.len() > MAX_TAG_LEN || tag.contains('\0') {
            return Err(VolumeError::Tag { tag: tag.into() });
        }
        let mut config = (tag.len() as u16).to_le_bytes().to_vec();
        config.extend_from_slice(tag.as_bytes());
        Ok(VirtioP9 {
            server: Server::new(dir)?,
            config,
            req: Vec::with_capacity(64 << 10),
            resp: vec![0; MAX_MSIZE as usize],
            active: false,
            suppress: false,
            moved: false,
            syncer: Syncer::new(placement)
                .map_err(|e| VolumeError::Device(format!("sync threads: {e}")))?,
            session: 0,
            stats: P9Stats::default(),
        })
    }

    /// For a transport a worker thread serves ([`super::worker::Worked`]):
    /// notifications are suppressed while it looks at the ring.
    pub(crate) fn worked(mut self) -> VirtioP9 {
        self.suppress = true;
        self
    }

    /// Answers every request in the ring. True if it answered any.
    fn serve(&mut self, ctx: &mut VirtioCtx) -> Result<bool, DeviceError> {
        let mem = ctx.mem;
        let q = &mut ctx.queues[REQUESTS];
        let mut any = false;
        for (p, result) in self.syncer.take() {
            if p.session != self.session {
                continue;
            }
            let m = match result {
                Ok(()) => Msg::Rfsync,
                Err(e) => Msg::Rlerror {
                    ecode: e.raw_os_error() as u32,
                },
            };
            let n = wire::encode(p.tag, &m, &mut self.resp).unwrap_or(0);
            write_answer(mem, &self.resp[..n], &p.writable)?;
            q.add_used(mem, p.head, n as u32)?;
            self.stats.requests += 1;
            any = true;
        }
        while let Some(chain) = q.iter(mem)?.next() {
            let head = chain.head_index();
            let msize = self.server.msize() as usize;
            self.req.clear();
            let mut oversized = false;
            let mut writable: Vec<(GuestAddress, usize)> = Vec::new();
            for d in chain {
                let len = d.len() as usize;
                if d.is_write_only() {
                    writable.push((d.addr(), len));
                } else {
                    // Over the message size only the header is kept, for
                    // the tag of the error.
                    let take = if oversized || self.req.len() + len > msize {
                        oversized = true;
                        len.min(wire::HEADER_LEN.saturating_sub(self.req.len()))
                    } else {
                        len
                    };
                    let start = self.req.len();
                    self.req.resize(start + take, 0);
                    mem.read_slice(&mut self.req[start..], d.addr())?;
                }
            }
            let room: usize = writable.iter().map(|w| w.1).sum();
            let out = &mut self.resp[..room.min(msize).min(MAX_MSIZE as usize)];
            let n = if oversized {
                self.stats.oversized += 1;
                let tag = match self.req.get(5..7) {
                    Some(&[a, b]) => u16::from_le_bytes([a, b]),
                    _ => wire::NOTAG,
                };
                let ecode = rustix::io::Errno::MSGSIZE.raw_os_error() as u32;
                wire::encode(tag, &Msg::Rlerror { ecode }, out).unwrap_or(0)
            } else if let Some((tag, fid, datasync)) = as_tfsync(&self.req) {
                match self.server.sync_target(fid) {
                    Ok(fd) => {
                        let p = Pending {
                            head,
                            tag,
                            writable,
                            session: self.session,
                        };
                        self.syncer.submit(fd, datasync != 0, p);
                        continue;
                    }
                    Err(e) => {
                        let ecode = e.raw_os_error() as u32;
                        wire::encode(tag, &Msg::Rlerror { ecode }, out).unwrap_or(0)
                    }
                }
            } else {
                self.server.handle(&self.req, out)
            };
            write_answer(mem, &self.resp[..n], &writable)?;
            q.add_used(mem, head, n as u32)?;
            self.stats.requests += 1;
            any = true;
        }
        if any {
            if self.suppress {
                // The worker looks at the ring for a while now.
                q.disable_notification(mem)?;
            }
            ctx.signal_used();
            self.moved = true;
        }
        Ok(any)
    }
}

/// A Tfsync's tag, fid and datasync flag; None for any other message
/// (only its type byte is looked at: the server decodes those itself).
fn as_tfsync(req: &[u8]) -> Option<(u16, u32, u32)> {
    if req.get(4) != Some(&wire::msg::TFSYNC) {
        return None;
    }
    match wire::decode(req) {
        Ok((tag, Msg::Tfsync { fid, datasync })) => Some((tag, fid, datasync)),
        _ => None,
    }
}

/// Copies an answer into the chain's device-writable buffers, in order.
fn write_answer(
    mem: &vm_memory::GuestMemoryMmap,
    answer: &[u8],
    writable: &[(GuestAddress, usize)],
) -> Result<(), DeviceError> {
    let mut done = 0;
    for &(addr, len) in writable {
        if done == answer.len() {
            break;
        }
        let k = len.min(answer.len() - done);
        mem.write_slice(&answer[done..done + k], addr)?;
        done += k;
    }
    Ok(())
}

impl VirtioDevice for VirtioP9 {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_9P
    }

    fn features(&self) -> u64 {
        F_MOUNT_TAG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, _: u64, _: &[u8]) {}

    fn activate(&mut self, ctx: &mut VirtioCtx, _features: u64) -> Result<(), DeviceError> {
        if !ctx.queues[REQUESTS].ready() {
            return Err(DeviceError::Other(
                "virtio-9p needs its request queue set up".into(),
            ));
        }
        self.active = true;
        self.serve(ctx).map(|_| ())
    }

    fn notify(&mut self, ctx: &mut VirtioCtx, _queue: usize) -> Result<(), DeviceError> {
        self.serve(ctx).map(|_| ())
    }

    /// A new driver starts a new session: the old one's fids are closed.
    fn reset(&mut self) {
        self.active = false;
        self.session += 1;
        self.server.reset();
        // Syncs of the old session answer nobody (and their event must
        // not keep a worker waking).
        drop(self.syncer.take());
    }

    fn poll(&mut self, ctx: &mut VirtioCtx, active: bool) -> Result<bool, DeviceError> {
        if active && self.active {
            self.serve(ctx)
        } else {
            // Nobody to answer (a broken or reset device): syncs that
            // finish are dropped, so their event does not keep the worker
            // waking.
            drop(self.syncer.take());
            Ok(false)
        }
    }

    fn settle(&mut self, ctx: &mut VirtioCtx, active: bool) -> Result<bool, DeviceError> {
        if !(self.suppress && active && self.active) {
            return Ok(false);
        }
        // Notifications on, then one more look: a request published before
        // the driver saw the flag cleared was not notified.
        Ok(ctx.queues[REQUESTS].enable_notification(ctx.mem)?)
    }

    /// Readable when a sync finished: its answer goes out at the next poll.
    fn wait_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.syncer.event())
    }

    fn take_moved(&mut self) -> bool {
        std::mem::take(&mut self.moved)
    }

    fn unsaved_state(&self) -> Option<&'static str> {
        Some("the volume (the guest's open files on it)")
    }
}

#[cfg(test)]
#[path = "p9_tests.rs"]
mod tests;

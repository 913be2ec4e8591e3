//! The runner's end of the guest's network link. The virtio-net device
//! (`virtio::net`) moves Ethernet frames between the guest's queues and a
//! [`NetBackend`]; the backend decides where they go. Today's one backend
//! is [`user::UserNet`]: a user-mode TCP/IP stack (smoltcp) at
//! [`pgkraft_abi::NET_HOST_IP`] that publishes guest ports on host
//! addresses (`--publish`), relaying each host connection to the guest
//! over the link. The other is [`tap::TapNet`] (`--tap NAME`): the link
//! is a Linux tap device and frames pass through unchanged.
//!
//! No interrupts: the device's worker thread (`virtio/worker.rs`) runs
//! the backend while the guest runs, blocking on the backend's
//! [`NetBackend::wait_fd`] when there is nothing to do; the vCPU thread
//! runs it too when the guest notifies a queue or waits in `hc::WAIT`.
//!
//! docs/ARCHITECTURE.md §4.

pub(crate) mod activity;
mod link;
mod publish;
mod relay;
pub mod tap;
pub(crate) mod user;

#[cfg(test)]
mod tests;

use std::os::fd::RawFd;
use std::time::Duration;

pub(crate) use activity::Activity;
pub use publish::{NetConfig, PublishRule};

/// What the virtio-net device needs from whatever carries its frames.
/// Frames are whole Ethernet frames without the virtio header. Every
/// queue is the backend's and bounded: `send` refuses and `recv` has
/// nothing rather than anything growing without bound.
pub(crate) trait NetBackend: Send {
    /// Whether [`Self::send`] would take a frame now.
    fn can_send(&self) -> bool;
    /// A frame from the guest. `false`: not taken (full); the device
    /// leaves the guest's buffer in its queue and tries after a [`Self::poll`].
    fn send(&mut self, frame: &[u8]) -> bool;
    /// Whether a frame for the guest is waiting.
    fn can_recv(&self) -> bool;
    /// The next frame for the guest.
    fn recv(&mut self) -> Option<Vec<u8>>;
    /// Does the host side's pending work (frames from the guest, timers,
    /// host sockets). True if anything happened.
    fn poll(&mut self) -> bool;
    /// Readable when the host side has work for [`Self::poll`]; owned by
    /// the backend (valid while it lives, never closed by the caller).
    fn wait_fd(&self) -> Option<RawFd>;
    /// When [`Self::poll`] must run again at the latest (timers), if ever.
    fn poll_delay(&mut self) -> Option<Duration>;
}

/// Why the network could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(
        "cannot publish {addr}: {source}. Another program (or another --publish) holds that \
         address; pick a free HOST_PORT in --publish [HOST_IP:]HOST_PORT:GUEST_PORT, or stop \
         whatever listens there"
    )]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("setting up the network: {0}")]
    Setup(std::io::Error),
    #[error(
        "--tap {name:?}: a tap device name is 1 to 15 bytes without '/', ':' or spaces \
         (Linux's limit); pick a shorter name such as pgk0"
    )]
    TapName { name: String },
    #[error(
        "{path} does not exist, so no tap device can be opened. Load the tun module \
         (`sudo modprobe tun`), or start the container with --device /dev/net/tun; or run \
         without --tap (--publish needs no device)"
    )]
    TapNoDevice { path: String },
    #[error(
        "not allowed to attach tap device {name:?} ({source}). Creating a tap, or attaching one \
         this user does not own, needs CAP_NET_ADMIN: create it beforehand for this user \
         (`sudo ip tuntap add dev {name} mode tap user $USER`), or run pgkraft as root"
    )]
    TapPermission {
        name: String,
        source: std::io::Error,
    },
    #[error(
        "tap device {name:?} is in use by another program (a tap has one reader); stop it or \
         pick another name for --tap"
    )]
    TapBusy { name: String },
    #[error(
        "{name:?} exists but is not a tap device (a tun device, or another kind of interface); \
         pick another name for --tap, or delete it (`sudo ip link delete {name}`)"
    )]
    TapNotTap { name: String },
    #[error("could not attach tap device {name:?}: {source}")]
    Tap {
        name: String,
        source: std::io::Error,
    },
    #[error(
        "--tap and --publish do not go together: published ports are the user-mode network's; with a tap, reach the guest at its address on the tap"
    )]
    TapWithPublish,
}

//! The runner's end of the guest's network link. The virtio-net device
//! (`virtio::net`) moves Ethernet frames between the guest's queues and a
//! [`NetBackend`]; the backend decides where they go. Today's one backend
//! is [`user::UserNet`]: a user-mode TCP/IP stack (smoltcp) at
//! [`pgkraft_abi::NET_HOST_IP`] that publishes guest ports on host
//! addresses (`--publish`), relaying each host connection to the guest
//! over the link. A tap device would be a second backend behind the same
//! trait.
//!
//! No interrupts and no thread of its own: the vCPU thread runs the
//! backend when the guest notifies a queue and while it waits in
//! `hc::WAIT` (see `devices/wait.rs`), blocking on the backend's
//! [`NetBackend::wait_fd`] when there is nothing to do.
//!
//! docs/ARCHITECTURE.md §4.

mod link;
mod publish;
mod relay;
pub(crate) mod user;

#[cfg(test)]
mod tests;

use std::os::fd::RawFd;
use std::time::Duration;

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
    #[error("setting up the user-mode network: {0}")]
    Setup(std::io::Error),
}

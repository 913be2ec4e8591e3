//! The embedded KVM runner (being written).

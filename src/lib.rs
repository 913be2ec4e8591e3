//! pgkraft: recipe -> one bootable unikernel image -> boot it under our own KVM runner.
pub mod build;
pub mod recipe;
pub mod vmm;

//! pgkraft: recipe -> one bootable unikernel image -> boot it under our own KVM runner.
#![forbid(unsafe_code)]
pub mod bench;
pub mod build;
pub mod catalog;
pub mod duration;
pub mod first_answer;
pub mod fleet;
pub mod image;
pub mod image_info;
pub mod inspect;
pub mod package;
pub mod paths;
pub mod pgsingle;
pub mod progress;
pub mod ready;
pub mod recipe;
pub mod serve;
pub mod smoke;
pub mod source_date;
pub mod volume;
pub use pgkraft_vmm as vmm;

//! The build pipeline's stages (ARCHITECTURE.md §1).
pub mod cache;
pub mod fetch;
pub mod musl;

//! klp-harness: builds kernels and livepatch fixtures, boots them in QEMU,
//! drives load / replace / revert scenarios and judges what the guest shows.

pub mod cache;
pub mod host;
pub mod project;
pub mod yaml;
pub mod kernel;
pub mod fixture;
pub mod guest;
pub mod image;
pub mod vm;

//! klp-harness: builds kernels and livepatch fixtures, boots them in QEMU,
//! drives load / replace / revert scenarios and judges what the guest shows.
//!
//! Data flows one way through the modules:
//! kernel ──> fixture ──> image ──> vm ──> guest ──> scenario ──> report.
//! `model` predicts what a scenario observes; `explore` searches for
//! sequences where a kernel disagrees with it.

pub mod arch;
pub mod bench;
pub mod bundle;
pub mod cache;
pub mod edit_loop;
pub mod errno;
pub mod event;
pub mod exit;
pub mod explore;
pub mod fixture;
pub mod guest;
pub mod host;
pub mod image;
pub mod interrupt;
pub mod kbuild;
pub mod kernel;
pub mod model;
pub mod mutate;
pub mod peer;
pub mod project;
pub mod report;
pub mod scenario;
pub mod settings;
pub mod suite;
pub mod testbed;
pub mod ui;
pub mod vm;
pub mod yaml;

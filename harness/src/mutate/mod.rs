//! `klp-harness mutate`: mutants of the livepatch core, each built
//! incrementally and run against the scenario suite (and the kernel's own
//! selftests), classified and scored.

pub mod lexer;
pub mod operators;

#![warn(missing_docs)]
//! energy-prune
pub mod arch;
pub mod energy;
pub mod error;
pub mod network;
pub mod nn;
pub mod prune;
pub use error::{Error, Result};

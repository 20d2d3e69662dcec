#![warn(missing_docs)]
//! energy-prune
pub mod arch;
pub mod error;
pub use error::{Error, Result};

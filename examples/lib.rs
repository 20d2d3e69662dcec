//! The examples of energy-prune live beside this file; this package has no
//! library of its own (run them with `cargo run -p energy-prune-examples --example NAME`).

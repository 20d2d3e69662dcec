//! One module per command: its flags (`Args`, with `check` for what clap cannot
//! check alone) and its `run`.

pub mod calibrate;
pub mod compact;
pub mod ecc_latency;
pub mod energy_report;
pub mod lenet5_energy;
pub mod multi_budget;
pub mod plan;
pub mod project_sharded;
pub mod prune_onnx;
pub mod quantize;
pub mod sweep;
pub mod train_lenet5;

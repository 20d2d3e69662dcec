//! Flags shared by several commands, defined once and flattened into each.

use std::path::PathBuf;

/// A usage error found after parsing (a value out of range, a missing file): the
/// tool exits with code 2, as clap does for flags it cannot parse.
#[derive(Debug)]
pub struct Usage(pub String);

impl From<String> for Usage {
    fn from(s: String) -> Self {
        Usage(s)
    }
}

impl From<&str> for Usage {
    fn from(s: &str) -> Self {
        Usage(s.to_owned())
    }
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `--json`: a machine-readable last line.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Json {
    /// Print one JSON object with the results as the last line of standard output.
    #[arg(long)]
    pub json: bool,
}

/// `--seed`: the one seed of every random choice.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Seed {
    /// Seed of every random choice (initialisation, data order, samples); runs with
    /// the same seed give the same figures.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// `--data`: where the MNIST-format IDX files are.
#[derive(clap::Args, Debug, Clone)]
pub struct MnistDir {
    /// Directory holding the four MNIST IDX .gz files (train/t10k images and labels).
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
}

/// `CxHxW` for clap (`--input 3x224x224`).
pub fn chw(s: &str) -> Result<[usize; 3], String> {
    crate::common::parse_chw(s)
}

/// A statistic of repeated measurements for clap (`--statistic median`).
pub fn statistic(s: &str) -> Result<energy_prune::energy::Statistic, String> {
    crate::common::parse_statistic(s)
}

/// The systolic array's hardware parameters (Eyeriss-like defaults).
#[derive(clap::Args, Debug, Clone)]
pub struct Hardware {
    /// Processing-element array as ROWSxCOLS.
    #[arg(long, value_name = "ROWSxCOLS", default_value = "12x14", value_parser = array)]
    pub array: (usize, usize),
    /// Input buffer capacity in elements.
    #[arg(long, default_value_t = DEFAULT_HW.input_buffer)]
    pub input_buffer: u64,
    /// Weight buffer capacity in elements.
    #[arg(long, default_value_t = DEFAULT_HW.weight_buffer)]
    pub weight_buffer: u64,
    /// Energy of one MAC (units of the model).
    #[arg(long, default_value_t = DEFAULT_HW.e_mac)]
    pub e_mac: f64,
    /// Energy of one DRAM access.
    #[arg(long, default_value_t = DEFAULT_HW.e_dram)]
    pub e_dram: f64,
    /// Energy of one global-buffer access.
    #[arg(long, default_value_t = DEFAULT_HW.e_buf)]
    pub e_buf: f64,
    /// Energy of one register-file access.
    #[arg(long, default_value_t = DEFAULT_HW.e_rf)]
    pub e_rf: f64,
}

const DEFAULT_HW: energy_prune::energy::SystolicConfig =
    energy_prune::energy::SystolicConfig::EYERISS;

impl Hardware {
    /// The config as given (validated by [`Hardware::config`] and by the model).
    pub fn raw(&self) -> energy_prune::energy::SystolicConfig {
        energy_prune::energy::SystolicConfig {
            rows: self.array.0,
            cols: self.array.1,
            input_buffer: self.input_buffer,
            weight_buffer: self.weight_buffer,
            e_mac: self.e_mac,
            e_dram: self.e_dram,
            e_buf: self.e_buf,
            e_rf: self.e_rf,
            precision: energy_prune::energy::PrecisionScaling::HOROWITZ,
        }
    }

    /// The config, validated; an invalid value is named by its flag.
    pub fn config(&self) -> Result<energy_prune::energy::SystolicConfig, Usage> {
        let cfg = self.raw();
        cfg.validate().map_err(|e| match e {
            energy_prune::Error::InvalidParameter {
                name,
                value,
                reason,
            } => {
                let flag = match name {
                    "rows" | "cols" => "array".to_owned(),
                    other => other.replace('_', "-"),
                };
                Usage(format!("--{flag} {value}: {reason}"))
            }
            other => Usage(other.to_string()),
        })?;
        Ok(cfg)
    }
}

fn array(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("{s}: expected ROWSxCOLS with whole numbers, e.g. 12x14");
    let (m, n) = s.split_once('x').ok_or_else(bad)?;
    Ok((m.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?))
}

/// Where measured energy comes from (`calibrate --oracle rapl|nvml`, `lab ecc
/// --model energy`).
#[derive(clap::Args, Debug, Clone)]
pub struct Counter {
    /// RAPL domains summed (package, core, uncore, dram, psys), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "package")]
    pub rapl_domains: Vec<String>,
    /// Root of the powercap tree.
    #[arg(long, default_value = energy_prune_nn::meter::POWERCAP_ROOT)]
    pub powercap_root: std::path::PathBuf,
    /// NVML index of the GPU.
    #[arg(long, default_value_t = 0)]
    pub gpu: u32,
}

impl Counter {
    /// Check the flags for a counter of `kind` (rapl or nvml).
    pub fn check(&self, kind: &str) -> Result<(), Usage> {
        for d in &self.rapl_domains {
            energy_prune_nn::meter::RaplDomain::parse(d).map_err(|_| {
                format!("--rapl-domains {d}: expected package, core, uncore, dram or psys")
            })?;
        }
        if kind == "nvml" && !cfg!(feature = "nvml") {
            return Err("nvml: this build has no NVML support; build the tool with \
                 `cargo install energy-prune-cli --features nvml` (or `cargo run --features nvml`)"
                .into());
        }
        Ok(())
    }

    /// Open the counter of `kind` (rapl or nvml).
    ///
    /// # Errors
    /// The counter's errors (no powercap tree, a missing domain, no NVML).
    pub fn open(
        &self,
        kind: &str,
    ) -> energy_prune::Result<Box<dyn energy_prune_nn::meter::EnergyCounter>> {
        use energy_prune_nn::meter::{RaplCounter, RaplDomain};
        match kind {
            "rapl" => {
                let domains = self
                    .rapl_domains
                    .iter()
                    .map(|d| RaplDomain::parse(d))
                    .collect::<energy_prune::Result<Vec<_>>>()?;
                Ok(Box::new(RaplCounter::open(&self.powercap_root, &domains)?))
            }
            #[cfg(feature = "nvml")]
            "nvml" => Ok(Box::new(energy_prune_nn::meter::NvmlCounter::open(
                self.gpu,
            )?)),
            other => Err(energy_prune::Error::param(
                "energy counter",
                other,
                "expected rapl or nvml (nvml needs the tool built with --features nvml)",
            )),
        }
    }
}

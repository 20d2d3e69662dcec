//! Out-of-core projection: a synthetic model of 10^9 weights, stored as shard files
//! on disk (f32 little-endian), projected onto an energy budget with the sharded
//! protocol while holding one shard in memory at a time.
//!
//! ```sh
//! energy-prune lab sharded              # 10^9 weights, 32 shards
//! energy-prune lab sharded --weights 50000000 --shards 8 --json
//! ```
//!
//! The job first checks the protocol on a smaller instance (`--check-weights`,
//! default 2 * 10^7) against the in-memory projection (weights compared bit for
//! bit), then generates the large model (`--dir`, default `target/project_sharded`),
//! projects it and prints the time, the passes over the data, the peak resident
//! memory and the result. With `--json` the last line is
//! `{"weights", "shards", "seconds", "peak_rss_mb", "budget", "energy", "identical_to_in_memory", ...}`
//! (`budget` and `energy` as fractions of the dense model's knapsack cost).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::common::check;
use energy_prune::energy::LayerCost;
use energy_prune::prune::projection::sharded::{Request, Shard, answer, coordinate};
use energy_prune::prune::{ProjectionWorkspace, ShardedProblem, greedy_knapsack};
use energy_prune_nn::latency::peak_rss_mb;

use crate::args::Usage;

/// Flags of this job.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Weights in all shards.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub weights: u64,
    /// Number of shards.
    #[arg(long, default_value_t = 32)]
    pub shards: usize,
    /// Check against the in-memory projection up to this many weights.
    #[arg(long, default_value_t = 20_000_000)]
    pub check_weights: u64,
    /// Budget as a fraction of the dense network's cost, in (0, 1].
    #[arg(long, default_value_t = 0.3)]
    pub budget: f64,
    /// Directory of the shard files.
    #[arg(long, default_value = "target/project_sharded")]
    pub dir: PathBuf,
    /// Keep the shard files.
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub print: crate::args::Json,
    #[command(flatten)]
    pub rng: crate::args::Seed,
}

impl Args {
    /// Checks of values and files, before any work (exit code 2 on failure).
    pub fn check(&mut self) -> Result<(), Usage> {
        let a = self;
        check::fraction("--budget", a.budget)?;
        check::at_least_one("--shards", a.shards)?;
        // The weights live in files (4 bytes each), the checked ones in memory too.
        const MAX_WEIGHTS: u64 = 1 << 36;
        const MAX_CHECKED: u64 = 1 << 28;
        if a.weights > MAX_WEIGHTS {
            return Err(format!(
                "--weights {}: at most 2^36 ({MAX_WEIGHTS}, 256 GiB of shard files)",
                a.weights
            )
            .into());
        }
        if a.check_weights > MAX_CHECKED.min(a.weights) {
            return Err(format!(
                "--check-weights {}: at most 2^28 ({MAX_CHECKED}, 1 GiB in memory) and at most \
                 --weights ({})",
                a.check_weights, a.weights
            )
            .into());
        }
        if a.weights < 1000 || a.check_weights < 1000 {
            return Err("--weights and --check-weights must be at least 1000".into());
        }
        if a.weights / a.shards as u64 > 1 << 28 {
            return Err(format!(
            "--shards {}: shards of more than 2^28 weights (1 GiB) would not keep memory bounded; use more shards",
            a.shards
        )
        .into());
        }
        std::fs::create_dir_all(&a.dir).map_err(|e| format!("--dir {}: {e}", a.dir.display()))?;
        check::writable("--dir", &a.dir.join("probe"))?;
        Ok(())
    }
}

/// Twelve layers: sizes proportional to a fixed pattern (large fully-connected
/// layers and small convolutions), costs like a systolic array's (a few layers pay
/// a surcharge beyond a weight buffer).
fn synthetic_problem(total: u64, budget: f64) -> ShardedProblem {
    let shares = [1u64, 2, 3, 3, 4, 6, 8, 10, 12, 14, 17, 20];
    let sum: u64 = shares.iter().sum();
    let mut layer_lens: Vec<u64> = shares.iter().map(|s| total * s / sum).collect();
    let assigned: u64 = layer_lens.iter().sum();
    *layer_lens.last_mut().expect("twelve layers") += total - assigned;
    let costs: Vec<LayerCost> = layer_lens
        .iter()
        .enumerate()
        .map(|(l, &n)| {
            let base = 150.0 + 70.0 * (l % 5) as f64;
            if l % 4 == 1 {
                LayerCost {
                    base,
                    surcharge: 2.5 * base,
                    buffered: (n / 3) as usize,
                }
            } else {
                LayerCost {
                    base,
                    surcharge: 0.0,
                    buffered: n as usize,
                }
            }
        })
        .collect();
    let dense: f64 = costs
        .iter()
        .zip(&layer_lens)
        .map(|(c, &n)| {
            let b = (c.buffered as u64).min(n);
            b as f64 * c.base + (n - b) as f64 * (c.base + c.surcharge)
        })
        .sum();
    ShardedProblem {
        costs,
        layer_lens,
        capacity: budget * dense,
    }
}

/// The weight at global position `i` (a cheap counter-based generator, so any range
/// can be produced independently): roughly normal, with exact ties and zeros.
fn weight_at(seed: u64, i: u64) -> f32 {
    let mut x = i.wrapping_add(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    match x % 64 {
        0 => 0.0,
        1 => 0.5,
        _ => {
            // Sum of four uniforms: roughly normal, bounded.
            let u = |k: u32| ((x >> (16 * k)) & 0xffff) as f32 / 65_536.0;
            (u(0) + u(1) + u(2) + u(3) - 2.0) * 1.7
        }
    }
}

fn shard_ranges(total: u64, shards: usize) -> Vec<(u64, u64)> {
    let per = total.div_ceil(shards as u64);
    (0..shards as u64)
        .map(|s| (s * per, ((s + 1) * per).min(total)))
        .filter(|(a, b)| a < b)
        .collect()
}

fn shard_path(dir: &Path, s: usize) -> PathBuf {
    dir.join(format!("shard-{s:04}.f32"))
}

/// Write shard `s` (`[a, b)`) through a small buffer.
fn generate(dir: &Path, s: usize, (a, b): (u64, u64), seed: u64) -> energy_prune::Result<()> {
    let path = shard_path(dir, s);
    let io = |e| energy_prune::Error::Io {
        path: path.clone(),
        source: e,
    };
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&path).map_err(io)?);
    for i in a..b {
        out.write_all(&weight_at(seed, i).to_le_bytes())
            .map_err(io)?;
    }
    out.flush().map_err(io)
}

/// Read a shard file into `buf` (reused), through a 1 MiB byte buffer.
fn read_shard(path: &Path, buf: &mut Vec<f32>, len: usize) -> energy_prune::Result<()> {
    let io = |e| energy_prune::Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    buf.clear();
    let mut r = BufReader::new(File::open(path).map_err(io)?);
    let mut bytes = vec![0u8; 1 << 20];
    while buf.len() < len {
        let want = ((len - buf.len()) * 4).min(bytes.len());
        r.read_exact(&mut bytes[..want]).map_err(io)?;
        buf.extend(
            bytes[..want]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
    Ok(())
}

/// Write a shard file through a temporary file and a rename: a failed write
/// leaves the previous shard intact.
fn write_shard(path: &Path, buf: &[f32]) -> energy_prune::Result<()> {
    let io = |e| energy_prune::Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let tmp = path.with_extension("f32.tmp-write");
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(io)?);
    for v in buf {
        out.write_all(&v.to_le_bytes()).map_err(io)?;
    }
    out.flush().map_err(io)?;
    drop(out);
    std::fs::rename(&tmp, path).map_err(io)
}

/// Project the shard files of `problem` in `dir`, one shard in memory at a time.
/// Returns the outcome and the number of passes over the files.
fn project_files(
    dir: &Path,
    problem: &ShardedProblem,
    ranges: &[(u64, u64)],
) -> energy_prune::Result<energy_prune::prune::ShardedOutcome> {
    let mut buf: Vec<f32> = Vec::new();
    coordinate(problem, |req| {
        let writes = matches!(
            &req.request,
            Request::Apply { .. } | Request::KeepOnly { .. }
        );
        let mut replies = Vec::with_capacity(ranges.len());
        for (s, &(a, b)) in ranges.iter().enumerate() {
            let path = shard_path(dir, s);
            read_shard(&path, &mut buf, (b - a) as usize)?;
            let mut shard = Shard::from_range(problem, a, &mut buf)?;
            replies.push(answer(problem, s, &mut shard, req)?);
            if writes {
                write_shard(&path, &buf)?;
            }
        }
        Ok(replies)
    })
}

/// Run the job.
pub fn run(args: &Args) -> energy_prune::Result<()> {
    // 1. The protocol against the in-memory projection, on a smaller instance.
    let small = synthetic_problem(args.check_weights, args.budget);
    let small_ranges = shard_ranges(args.check_weights, args.shards.min(16));
    let check_dir = args.dir.join("check");
    std::fs::create_dir_all(&check_dir).map_err(|e| energy_prune::Error::Io {
        path: check_dir.clone(),
        source: e,
    })?;
    for (s, &r) in small_ranges.iter().enumerate() {
        generate(&check_dir, s, r, args.rng.seed)?;
    }
    let mut layers: Vec<Vec<f32>> = Vec::new();
    let mut at = 0u64;
    for &n in &small.layer_lens {
        layers.push((at..at + n).map(|i| weight_at(args.rng.seed, i)).collect());
        at += n;
    }
    let in_memory = greedy_knapsack(
        &mut layers,
        &small.costs,
        small.capacity,
        &mut ProjectionWorkspace::new(),
    )?;
    let sharded = project_files(&check_dir, &small, &small_ranges)?;
    let mut identical =
        sharded.selection.kept == in_memory.kept && sharded.selection.charged == in_memory.charged;
    let flat: Vec<f32> = layers.concat();
    let mut buf = Vec::new();
    for (s, &(a, b)) in small_ranges.iter().enumerate() {
        read_shard(&shard_path(&check_dir, s), &mut buf, (b - a) as usize)?;
        identical &= buf[..] == flat[a as usize..b as usize];
    }
    drop((layers, flat, buf));
    let _ = std::fs::remove_dir_all(&check_dir);
    println!(
        "check on {} weights in {} shards: sharded result {} the in-memory projection",
        args.check_weights,
        small_ranges.len(),
        if identical {
            "identical to"
        } else {
            "DIFFERS from"
        }
    );

    // 2. The large model on disk.
    let problem = synthetic_problem(args.weights, args.budget);
    let ranges = shard_ranges(args.weights, args.shards);
    let t = Instant::now();
    for (s, &r) in ranges.iter().enumerate() {
        generate(&args.dir, s, r, args.rng.seed)?;
    }
    println!(
        "generated {} weights in {} shard files of up to {} MB under {} ({:.1} s)",
        args.weights,
        ranges.len(),
        (ranges[0].1 - ranges[0].0) * 4 / 1_000_000,
        args.dir.display(),
        t.elapsed().as_secs_f64()
    );
    let dense: f64 = problem.capacity / args.budget;
    let start = Instant::now();
    let out = project_files(&args.dir, &problem, &ranges)?;
    let seconds = start.elapsed().as_secs_f64();
    let rss = peak_rss_mb();
    if !args.keep {
        for s in 0..ranges.len() {
            let _ = std::fs::remove_file(shard_path(&args.dir, s));
        }
    }
    let sel = &out.selection;
    println!(
        "\n| weights | shards | seconds | passes over the data | peak RSS | budget | energy | kept | largest reply |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.1} | {} | {:.0} MB | {:.3} | {:.4} | {} | {} numbers |",
        args.weights,
        ranges.len(),
        seconds,
        out.rounds,
        rss,
        args.budget,
        sel.charged / dense,
        sel.kept,
        out.largest_reply_numbers
    );
    if args.print.json {
        println!(
            "{}",
            serde_json::json!({
                "weights": args.weights,
                "shards": ranges.len(),
                "seconds": seconds,
                "passes": out.rounds,
                "peak_rss_mb": rss,
                "budget": args.budget,
                "energy": sel.charged / dense,
                "kept": sel.kept,
                "largest_reply_numbers": out.largest_reply_numbers,
                "identical_to_in_memory": identical,
            })
        );
    }
    energy_prune_nn::workflow::require_budget_met(
        "the sharded projection",
        sel.charged <= problem.capacity,
        sel.charged,
        problem.capacity,
    )?;
    if identical {
        Ok(())
    } else {
        Err(energy_prune::Error::Unsupported {
            feature: "a sharded result different from the in-memory one".into(),
            hint: "this is a bug: please report the command line".into(),
        })
    }
}

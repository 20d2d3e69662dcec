//! Pruning plans: what a plan keeps and where it came from.
//!
//! ```text
//! energy-prune plan show PLAN.json [--json]
//! ```

use std::path::PathBuf;

use energy_prune::network::PruningPlan;

use crate::args::Usage;
use crate::common::check;

/// What to do with a plan.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print a plan's kept channels per width and its provenance.
    Show(Show),
}

/// Flags of `plan show`.
#[derive(clap::Args, Debug)]
pub struct Show {
    /// Pruning plan (JSON).
    #[arg(value_name = "PLAN.json")]
    pub plan: PathBuf,
    #[command(flatten)]
    pub print: crate::args::Json,
}

impl Show {
    /// The file must be readable.
    pub fn check(&mut self) -> Result<(), Usage> {
        check::readable("PLAN.json", &self.plan)
    }
}

/// Print the plan.
pub fn show(args: &Show) -> energy_prune::Result<()> {
    let plan = PruningPlan::load_json(&args.plan)?;
    let p = plan.provenance();
    println!(
        "plan for `{}` (fingerprint {:016x})",
        plan.architecture_name(),
        plan.fingerprint()
    );
    println!("made by energy-prune {}", p.crate_version);
    if let Some(m) = &p.cost_model {
        println!("cost model: {} ({})", m.kind, m.parameters);
    }
    match (p.budget, &p.budget_unit) {
        (Some(b), Some(u)) => println!("budget: {b} {u}"),
        (Some(b), None) => println!("budget: {b}"),
        _ => {}
    }
    if let Some(c) = p.predicted_cost {
        println!("predicted cost: {c}");
    }
    println!("\n{:>5}  {:>6}", "width", "kept");
    for (i, kept) in plan.kept().iter().enumerate() {
        println!("{i:>5}  {:>6}", kept.len());
    }
    if args.print.json {
        println!(
            "{}",
            serde_json::json!({
                "architecture": plan.architecture_name(),
                "fingerprint": format!("{:016x}", plan.fingerprint()),
                "crate_version": p.crate_version,
                "budget": p.budget,
                "budget_unit": p.budget_unit,
                "predicted_cost": p.predicted_cost,
                "widths": plan.widths(),
            })
        );
    }
    Ok(())
}

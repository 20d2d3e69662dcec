//! The examples check their arguments before any long work: a bad flag exits with
//! code 2 and a message naming it, in well under a second of work.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The example binary built by `cargo test` next to this test's binary.
fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?.join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    path.is_file().then_some(path)
}

fn rejects(name: &str, args: &[&str], says: &str) {
    let Some(bin) = example(name) else {
        panic!("example {name} not built (run through `cargo test`)");
    };
    let start = Instant::now();
    let out = Command::new(&bin)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {stderr}");
    assert!(stderr.contains(says), "{name} {args:?}: {stderr}");
    assert!(
        took < Duration::from_secs(5),
        "{name} {args:?} took {took:?}"
    );
}

#[test]
fn bad_flags_fail_fast_with_code_2() {
    let missing = "/nonexistent-dir/x.bin";
    rejects("lenet5_energy", &["--budget", "-1"], "--budget -1");
    rejects("lenet5_energy", &["--budget", "NaN"], "(0, 1]");
    rejects("lenet5_energy", &["--budget", "1.5"], "(0, 1]");
    rejects("lenet5_energy", &["--lr", "0"], "--lr");
    rejects("lenet5_energy", &["--data", "/nonexistent-dir"], "--data");
    rejects("lenet5_energy", &["--dense", missing], "--dense");
    rejects("lenet5_energy", &["--save-dense", missing], "--save-dense");
    rejects("ecc_latency", &["--budget", "NaN"], "--budget");
    rejects("ecc_latency", &["--cost-model", missing], "--cost-model");
    rejects("ecc_latency", &["--model", "flops"], "--model");
    rejects("calibrate", &["--min-fraction", "NaN"], "--min-fraction");
    rejects("calibrate", &["--out", missing], "--out");
    rejects("calibrate", &["--samples", "0"], "--samples");
    rejects("custom_training_loop", &["--budget", "0"], "--budget");
    rejects("train_lenet5", &["--save", missing], "--save");
    rejects("train_lenet5", &["--batch-size", "0"], "--batch-size");
    rejects("project_sharded", &["--budget", "2"], "--budget");
    rejects("multi_budget", &["--params", "0"], "--params");
    rejects("multi_budget", &["--energy", "NaN"], "--energy");
    rejects("project_sharded", &["--shards", "0"], "--shards");
    rejects(
        "project_sharded",
        &["--weights", "10", "--shards", "1"],
        "--weights",
    );
}

/// The out-of-core example end to end on a small model: the sharded result equals
/// the in-memory one and the budget holds.
#[test]
fn project_sharded_runs_small() {
    let bin = example("project_sharded").expect("example built by cargo test");
    let dir = std::env::temp_dir().join(format!("ep-sharded-{}", std::process::id()));
    let out = Command::new(&bin)
        .args([
            "--weights",
            "300000",
            "--shards",
            "5",
            "--check-weights",
            "200000",
        ])
        .args(["--json", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap();
    assert!(last.contains("\"identical_to_in_memory\":true"), "{last}");
    assert!(last.contains("\"shards\":5"), "{last}");
}

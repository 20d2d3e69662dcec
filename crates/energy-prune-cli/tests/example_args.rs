//! The tool checks its arguments before any long work: a bad flag exits with code
//! 2 and a message naming it, in well under a second of work; the jobs run end to
//! end on small inputs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The subcommand of the tool that runs the job once called `name`.
fn job(name: &str) -> &'static [&'static str] {
    match name {
        "lenet5_energy" => &["lab", "lenet5"],
        "ecc_latency" => &["lab", "ecc"],
        "multi_budget" => &["lab", "multi-budget"],
        "train_lenet5" => &["lab", "train-lenet5"],
        "project_sharded" => &["lab", "sharded"],
        "sweep" => &["lab", "sweep"],
        "quantize" => &["lab", "quantize"],
        "calibrate" => &["calibrate"],
        "energy_report" => &["report"],
        "prune_onnx" => &["prune"],
        "compact" => &["compact"],
        "plan" => &["plan"],
        other => panic!("no job {other}"),
    }
}

/// The tool, run from the workspace root (where `data/mnist` is).
fn tool(name: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_energy-prune"));
    c.args(job(name))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    c
}

fn rejects(name: &str, args: &[&str], says: &str) {
    let start = Instant::now();
    let out = tool(name).args(args).output().unwrap();
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {stderr}");
    assert!(stderr.contains(says), "{name} {args:?}: {stderr}");
    assert!(
        took < Duration::from_secs(5),
        "{name} {args:?} took {took:?}"
    );
}

/// `flags` followed by one path argument.
fn flags_then(flags: &[&str], path: &std::path::Path) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = flags.iter().map(Into::into).collect();
    v.push(path.into());
    v
}

/// Run example `name` from the crate directory, require success, and parse the
/// last line of its stdout as JSON.
fn run_json<S: AsRef<std::ffi::OsStr>>(name: &str, args: &[S]) -> serde_json::Value {
    let out = tool(name).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{name}: last line not JSON ({e}): {last}"))
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
    rejects("ecc_latency", &["--budgets", "0.5,x"], "--budgets");
    rejects("ecc_latency", &["--seeds", "0"], "--seeds");
    rejects("ecc_latency", &["--tolerance", "-1"], "--tolerance");
    rejects("ecc_latency", &["--budgets", "0.5,0"], "(0, 1]");
    rejects("calibrate", &["--min-fraction", "NaN"], "--min-fraction");
    rejects("calibrate", &["--out", missing], "--out");
    rejects("calibrate", &["--samples", "0"], "--samples");
    rejects("calibrate", &["--grid", "1"], "--grid");
    rejects("multi_budget", &["--level", "layer"], "--level");
    rejects("multi_budget", &["--tolerance", "2"], "--tolerance");
    rejects("multi_budget", &["--latency", "0"], "--latency");
    rejects("multi_budget", &["--cost-model", missing], "--cost-model");
    rejects("train_lenet5", &["--save", missing], "--save");
    rejects("train_lenet5", &["--batch-size", "0"], "--batch-size");
    rejects("project_sharded", &["--budget", "2"], "--budget");
    rejects("multi_budget", &["--params", "0"], "--params");
    rejects("multi_budget", &["--energy", "NaN"], "--energy");
    rejects("project_sharded", &["--shards", "0"], "--shards");
    rejects("sweep", &["--budgets", "0.2,x"], "--budgets");
    rejects("sweep", &["--budgets", "0.2,1.5"], "(0, 1]");
    rejects("sweep", &["--methods", "random"], "--methods");
    rejects(
        "sweep",
        &["--budgets", "0.2", "--breakdown-budget", "0.3"],
        "--breakdown-budget",
    );
    rejects("sweep", &["--train-limit", "5"], "--train-limit");
    rejects("sweep", &["--input-mask", "sometimes"], "--input-mask");
    rejects("sweep", &["--dense", missing], "--dense");
    rejects("sweep", &["--out", "/proc/none"], "--out");
    rejects("quantize", &["--budgets", "0.1,0"], "--budgets");
    rejects("quantize", &["--weight-bits", "1,8"], "--weight-bits");
    rejects("quantize", &["--activation-bits", ""], "--activation-bits");
    rejects("quantize", &["--methods", "fp4"], "--methods");
    rejects("quantize", &["--train-limit", "3"], "--train-limit");
    rejects(
        "project_sharded",
        &["--weights", "10", "--shards", "1"],
        "--weights",
    );
}

/// Counts have upper limits (a typo must not start a job that runs until killed or
/// fills the disk), devices are not read as files, and a cost model that cannot
/// serve is refused before any training.
#[test]
fn huge_counts_and_hostile_inputs_are_refused_before_work() {
    let max = "18446744073709551615";
    rejects("ecc_latency", &["--seeds", max], "--seeds");
    rejects("ecc_latency", &["--samples", "100000000"], "at most 100000");
    rejects(
        "project_sharded",
        &["--check-weights", max],
        "--check-weights",
    );
    rejects("project_sharded", &["--weights", max], "--weights");
    rejects(
        "lenet5_energy",
        &["--epochs", "1000000"],
        "--epochs 1000000: must be at most",
    );
    rejects(
        "lenet5_energy",
        &["--finetune-epochs", "1000000"],
        "--finetune-epochs",
    );
    rejects("sweep", &["--dense-epochs", "1000000"], "--dense-epochs");
    rejects(
        "multi_budget",
        &["--admm-finetune-epochs", "99999"],
        "--admm-finetune-epochs",
    );
    rejects("calibrate", &["--grid", "100000"], "--grid");
    rejects("energy_report", &["--onnx", "/dev/zero"], "--onnx");
    rejects(
        "ecc_latency",
        &["--cost-model", "/dev/zero"],
        "--cost-model",
    );
    // A cost model of an unknown kind: exit 1 at once, before the dense training.
    let dir = std::env::temp_dir().join(format!("ep-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("quadratic.json");
    std::fs::write(&model, r#"{"kind": "quadratic", "max": [1.0]}"#).unwrap();
    for name in ["ecc_latency", "multi_budget"] {
        let start = Instant::now();
        let out = tool(name)
            .args(flags_then(&["--cost-model"], &model))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains("known kind"), "{name}: {stderr}");
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{name} trained first"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Outputs are checked before any work: never a directory, never one of the
/// inputs (the training data, the model read), and the inputs stay as they were.
#[test]
fn outputs_never_replace_inputs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let train = root.join("data/mnist/train-images-idx3-ubyte.gz");
    let before = std::fs::metadata(&train).unwrap().len();
    let train_arg = train.to_str().unwrap();
    rejects("train_lenet5", &["--save", train_arg], "is also an input");
    rejects(
        "lenet5_energy",
        &["--save-dense", train_arg],
        "is also an input",
    );
    assert_eq!(std::fs::metadata(&train).unwrap().len(), before);
    let dir = std::env::temp_dir().join(format!("ep-outputs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("in.onnx");
    let graph = energy_prune_testing::onnx::torchvision::squeezenet1_0(0);
    let bytes = energy_prune_testing::onnx::to_bytes(&graph);
    std::fs::write(&model, &bytes).unwrap();
    let (m, out, d) = (
        model.to_str().unwrap(),
        dir.join("out.onnx"),
        dir.to_str().unwrap(),
    );
    let o = out.to_str().unwrap();
    rejects(
        "prune_onnx",
        &["--budget", "0.5", m, o, "--plan", m],
        "is also an input",
    );
    rejects("prune_onnx", &["--budget", "0.5", m, m], "is also an input");
    rejects(
        "prune_onnx",
        &["--budget", "0.5", m, o, "--plan", o],
        "another output",
    );
    rejects("prune_onnx", &["--budget", "0.5", m, d], "is a directory");
    rejects("lenet5_energy", &["--save-dense", d], "is a directory");
    rejects("energy_report", &["--onnx", d], "not a regular file");
    rejects(
        "energy_report",
        &["--onnx", "/dev/zero"],
        "not a regular file",
    );
    rejects("lenet5_energy", &["--epochs", "0"], "--epochs");
    rejects("train_lenet5", &["--epochs", "0"], "--epochs");
    rejects("ecc_latency", &["--samples", "0"], "--samples");
    rejects(
        "lenet5_energy",
        &["--input-mask", "--mask-rounds", "0"],
        "--mask-rounds",
    );
    assert_eq!(
        std::fs::read(&model).unwrap(),
        bytes,
        "the input model is untouched"
    );
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The out-of-core example end to end on a small model: the sharded result equals
/// the in-memory one and the budget holds.
#[test]
fn project_sharded_runs_small() {
    let dir = std::env::temp_dir().join(format!("ep-sharded-{}", std::process::id()));
    let args = flags_then(
        &[
            "--weights",
            "300000",
            "--shards",
            "5",
            "--check-weights",
            "200000",
            "--json",
            "--dir",
        ],
        &dir,
    );
    let last = run_json("project_sharded", &args);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(last["identical_to_in_memory"], true, "{last}");
    assert_eq!(last["shards"], 5, "{last}");
}

/// A run that collapses is never a point of the curve: on 1 500 training images
/// the energy-constrained run at 0.15 loses its weights in the first mask round
/// (kept weights fall from about 1 500 to 166, accuracy to chance). Whatever the
/// driver recovers, a point reported as a result is within its budget and well
/// above chance; a failed point is marked in the CSV and JSON, left out of the
/// curve, and the job exits with code 1 after writing its outputs.
#[test]
fn sweep_marks_collapsed_runs_failed() {
    let dir = std::env::temp_dir().join(format!("ep-sweep-fail-{}", std::process::id()));
    let args = flags_then(
        &[
            "--train-limit",
            "1500",
            "--test-limit",
            "500",
            "--budgets",
            "0.15",
            "--methods",
            "energy",
            "--json",
            "--out",
        ],
        &dir,
    );
    let out = tool("sweep").args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sweep.json")).unwrap()).unwrap();
    let csv = std::fs::read_to_string(dir.join("sweep.csv")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let p = &json["points"][0];
    match p["failed"].as_str() {
        None => {
            assert_eq!(out.status.code(), Some(0), "{stderr}");
            assert!(p["energy_ratio"].as_f64().unwrap() <= 0.15, "{p}");
            assert!(p["test_accuracy"].as_f64().unwrap() > 0.15, "{p}");
        }
        Some(why) => {
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(stderr.contains("marked failed"), "{stderr}");
            assert!(stdout.contains("FAILED"), "{stdout}");
            assert!(
                csv.lines().nth(1).unwrap().contains(",true,true,"),
                "{csv} ({why})"
            );
        }
    }
}

/// The sweep end to end on a few hundred images: every output is written and
/// well formed, every feasible point is within its budget, and the magnitude
/// baselines are infeasible below the unmasked all-zero energy while the
/// energy-constrained run (with input masks) reaches it.
#[test]
fn sweep_runs_small_and_writes_its_outputs() {
    let dir = std::env::temp_dir().join(format!("ep-sweep-{}", std::process::id()));
    let args = flags_then(
        &[
            "--train-limit",
            "400",
            "--test-limit",
            "200",
            "--dense-epochs",
            "1",
            "--epochs",
            "1",
            "--finetune-epochs",
            "1",
            "--mask-rounds",
            "1",
            "--budgets",
            "0.3,0.15",
            "--json",
            "--out",
        ],
        &dir,
    );
    // One dense epoch on 400 images: some runs end at chance and are marked
    // failed (exit code 1 after the outputs are written); the others are results.
    let out = tool("sweep").args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let points = last["points"].as_array().unwrap();
    assert_eq!(points.len(), 6, "{last}");
    let any_failed = points.iter().any(|p| p["failed"].is_string());
    assert_eq!(
        out.status.code(),
        Some(if any_failed { 1 } else { 0 }),
        "{stdout}"
    );
    for p in points {
        let (method, budget) = (p["method"].as_str().unwrap(), p["budget"].as_f64().unwrap());
        match p["energy_ratio"].as_f64() {
            Some(_) if p["failed"].is_string() => {}
            Some(r) => {
                assert!(r <= budget, "{p}");
                let acc = p["test_accuracy"].as_f64().unwrap();
                assert!(acc > 0.15 && acc <= 1.0, "a result above chance: {p}");
            }
            // Below the all-zero energy of the unmasked network (0.1523 of dense).
            None => assert!(method != "energy-constrained" && budget < 0.1523, "{p}"),
        }
    }
    assert!(points.iter().any(|p| p["energy_ratio"].is_null()), "{last}");
    let svg = last["svg"].as_array().unwrap();
    assert_eq!(svg.len(), 2);
    for path in svg {
        let text = std::fs::read_to_string(path.as_str().unwrap()).unwrap();
        assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
        assert!(text.contains("energy-constrained"), "legend or panel title");
    }
    let csv = std::fs::read_to_string(dir.join("sweep.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 7);
    assert!(rows.iter().all(|r| r.split(',').count() == 12), "{csv}");
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(full["points"].as_array().unwrap().len(), 6);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pruning and quantization on a few hundred images: every feasible point within its
/// budget in exact energy at its own precision, 0.05 of the dense 16-bit energy
/// reached by the joint method (below the floor of pruning alone without masks and
/// of uniform int8), the CSV, JSON and plot written.
#[test]
fn quantize_runs_small_and_writes_its_outputs() {
    let dir = std::env::temp_dir().join(format!("ep-quantize-{}", std::process::id()));
    let args = flags_then(
        &[
            "--train-limit",
            "400",
            "--test-limit",
            "200",
            "--dense-epochs",
            "1",
            "--epochs",
            "1",
            "--finetune-epochs",
            "1",
            "--budgets",
            "0.05,0.2",
            "--methods",
            "int8,joint",
            "--json",
            "--out",
        ],
        &dir,
    );
    let json = run_json("quantize", &args);
    let points = json["points"].as_array().unwrap();
    assert_eq!(points.len(), 4, "{json}");
    for p in points {
        let (method, budget) = (p["method"].as_str().unwrap(), p["budget"].as_f64().unwrap());
        if p["failed"].is_string() {
            continue; // a collapsed run on 400 images: a result of its own, not checked
        }
        if p["feasible"].as_bool().unwrap() {
            assert!(p["energy_ratio"].as_f64().unwrap() <= budget, "{p}");
            assert_eq!(p["layers"].as_array().unwrap().len(), 5);
            // The exported QDQ model reads back at the precision the run chose.
            let file = dir.join(p["onnx"].as_str().unwrap());
            let model = energy_prune_onnx::OnnxModel::load(&file, None).unwrap();
            let layers = p["layers"].as_array().unwrap();
            for (pr, l) in model.precision().iter().zip(layers) {
                assert_eq!(pr.weights.to_string(), l["weights"], "{p}");
                assert_eq!(pr.activations.to_string(), l["activations"], "{p}");
            }
        } else {
            // The int8 floor is about 0.076 of the dense 16-bit energy.
            assert!(method == "int8" && budget < 0.076, "{p}");
        }
    }
    let joint_low = points
        .iter()
        .find(|p| p["method"] == "joint" && p["budget"] == 0.05)
        .unwrap();
    assert!(joint_low["feasible"].as_bool().unwrap(), "{joint_low}");
    if let Some(layers) = joint_low["layers"].as_array() {
        assert!(
            layers.iter().any(|l| l["activations"] != "int16"),
            "{joint_low}"
        );
    }
    assert!(dir.join("onnx/dense.onnx").is_file());
    let csv = std::fs::read_to_string(dir.join("quantize.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5);
    assert!(csv.lines().all(|r| r.split(',').count() == 17), "{csv}");
    let svg = std::fs::read_to_string(dir.join("accuracy_energy.svg")).unwrap();
    assert!(svg.contains("joint") && svg.trim_end().ends_with("</svg>"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// ECC end to end on a few hundred images with the exact systolic model (no
/// calibration, so the run is short and deterministic in its costs): two budgets,
/// two seeds, the plot and the JSON with per-seed accuracies, every ECC network
/// within its budget on the model.
#[test]
fn ecc_latency_runs_small_with_seeds_and_a_plot() {
    let dir = std::env::temp_dir().join(format!("ep-ecc-{}", std::process::id()));
    let plot = dir.join("accuracy_latency.svg");
    let args = flags_then(
        &[
            "--model",
            "systolic",
            "--budgets",
            "0.9,0.8",
            "--seeds",
            "2",
            "--train-size",
            "300",
            "--prune-train-size",
            "300",
            "--dense-epochs",
            "1",
            "--epochs",
            "3",
            "--finetune-epochs",
            "0",
            "--json",
            "--plot",
        ],
        &plot,
    );
    let last = run_json("ecc_latency", &args);
    let runs = last["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{last}");
    for r in runs {
        let budget = r["budget"].as_f64().unwrap();
        let dense = last["dense"]["predicted"].as_f64().unwrap();
        for m in ["ecc", "uniform"] {
            let accs = r[m]["accuracies"].as_array().unwrap();
            assert_eq!(accs.len(), 2, "{r}");
            let mean = accs.iter().map(|a| a.as_f64().unwrap()).sum::<f64>() / 2.0;
            assert!((mean - r[m]["test_accuracy"].as_f64().unwrap()).abs() < 1e-12);
        }
        assert!(
            r["ecc"]["predicted"].as_f64().unwrap() <= budget * dense * (1.0 + 1e-9),
            "{r}"
        );
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("ECC") && svg.contains("uniform"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The ONNX route end to end: write a torchvision-shaped SqueezeNet, report its
/// energy, prune it to 40 % with compaction and a plan, and read the output back
/// through `energy_report --onnx` to the same energy.
#[test]
fn onnx_examples_run_end_to_end() {
    let dir = std::env::temp_dir().join(format!("ep-onnx-ex-{}", std::process::id()));
    let os = |s: &str| std::ffi::OsString::from(s);
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("squeezenet1_0.onnx");
    let graph = energy_prune_testing::onnx::torchvision::squeezenet1_0(0);
    std::fs::write(&model, energy_prune_testing::onnx::to_bytes(&graph)).unwrap();
    let pruned = dir.join("pruned.onnx");
    let plan = dir.join("plan.json");
    let dense = run_json(
        "energy_report",
        &[&os("--onnx"), model.as_os_str(), &os("--json")],
    );
    let report = run_json(
        "prune_onnx",
        &[
            &os("--budget"),
            &os("0.4"),
            model.as_os_str(),
            pruned.as_os_str(),
            &os("--compact"),
            &os("--plan"),
            plan.as_os_str(),
            &os("--json"),
        ],
    );
    assert_eq!(report["dense_energy"], dense["total"]);
    assert!(
        report["energy_ratio"].as_f64().unwrap() <= 0.4 + 1e-9,
        "{report}"
    );
    assert_eq!(report["reimported_energy"], report["energy"]);
    let again = run_json(
        "energy_report",
        &[&os("--onnx"), pruned.as_os_str(), &os("--json")],
    );
    assert_eq!(again["total"], report["energy"]);
    assert!(plan.is_file());
    let _ = std::fs::remove_dir_all(&dir);
    rejects(
        "prune_onnx",
        &["--budget", "0.5", "only-one.onnx"],
        "OUT.onnx",
    );
    rejects(
        "energy_report",
        &["--onnx", "/no/such.onnx"],
        "cannot be read",
    );
    rejects(
        "energy_report",
        &["--onnx", "x.onnx", "--input", "3x0x4"],
        "CxHxW",
    );
}

/// ONNX external data through the command line: `prune --external-data` writes
/// the weights into `OUT.onnx.data`; a model read from external data is written
/// so again (and `compact` too); an output that would overwrite the input's side
/// file is refused before any work.
#[test]
fn onnx_external_data_in_and_out() {
    let dir = std::env::temp_dir().join(format!("ep-onnx-ext-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let os = |p: &Path| p.as_os_str().to_owned();
    let s = |t: &str| std::ffi::OsString::from(t);
    let model = dir.join("squeezenet.onnx");
    let graph = energy_prune_testing::onnx::torchvision::squeezenet1_0(4);
    std::fs::write(&model, energy_prune_testing::onnx::to_bytes(&graph)).unwrap();
    let (ext, plan) = (dir.join("ext.onnx"), dir.join("plan.json"));
    let first = run_json(
        "prune_onnx",
        &[
            s("--budget"),
            s("0.5"),
            os(&model),
            os(&ext),
            s("--external-data"),
            s("--plan"),
            os(&plan),
            s("--json"),
        ],
    );
    let data = dir.join("ext.onnx.data");
    assert!(std::fs::metadata(&ext).unwrap().len() * 50 < std::fs::metadata(&data).unwrap().len());
    // Re-read from its side file: the same energy; pruned again, still external.
    let report = run_json("energy_report", &[s("--onnx"), os(&ext), s("--json")]);
    assert_eq!(report["total"], first["energy"]);
    let again = dir.join("again.onnx");
    let second = run_json(
        "prune_onnx",
        &[s("--budget"), s("0.4"), os(&ext), os(&again), s("--json")],
    );
    assert!(dir.join("again.onnx.data").is_file());
    assert!(second["energy_ratio"].as_f64().unwrap() <= 0.4 + 1e-9);
    let small = dir.join("small.onnx");
    let out = tool("compact")
        .args([os(&ext), os(&plan), os(&small)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("small.onnx.data").is_file());
    // Overwriting the input's side file is refused and leaves it intact.
    let before = std::fs::read(&data).unwrap();
    let out = tool("prune_onnx")
        .args([s("--budget"), s("0.5"), os(&ext), os(&data)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("side file"), "{stderr}");
    assert_eq!(std::fs::read(&data).unwrap(), before);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `calibrate --oracle rapl` end to end on a simulated powercap tree: a thread of
/// this test plays the hardware, advancing the package counter by 10 W times the
/// tool's CPU time (read from `/proc/PID/stat`), wrapping every 20 J. The tool
/// measures the idle power, calibrates joules per inference, and writes a model
/// whose provenance names the counter.
#[test]
fn calibrate_measures_energy_on_a_powercap_tree() {
    let root = std::env::temp_dir().join(format!("ep-powercap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let zone = root.join("intel-rapl:0");
    std::fs::create_dir_all(&zone).unwrap();
    std::fs::write(zone.join("name"), "package-0\n").unwrap();
    const RANGE: u64 = 20_000_000;
    std::fs::write(zone.join("max_energy_range_uj"), format!("{RANGE}\n")).unwrap();
    let write = |uj: u64| {
        let tmp = zone.join("energy_uj.tmp");
        std::fs::write(&tmp, format!("{}\n", uj % RANGE)).unwrap();
        std::fs::rename(&tmp, zone.join("energy_uj")).unwrap();
    };
    write(RANGE - 50_000);
    let out = root.join("model.json");
    let mut child = tool("calibrate")
        .args([
            "--net",
            "lenet5",
            "--samples",
            "12",
            "--repeats",
            "2",
            "--grid",
            "2",
        ])
        .args([
            "--batch",
            "16",
            "--oracle",
            "rapl",
            "--json",
            "--powercap-root",
        ])
        .arg(&root)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stat = format!("/proc/{}/stat", child.id());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if let Ok(text) = std::fs::read_to_string(&stat) {
            let fields: Vec<&str> = text
                .rsplit_once(')')
                .map_or("", |(_, r)| r)
                .split_whitespace()
                .collect();
            let ticks: u64 =
                fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
            // 10 W for every 10 ms tick of CPU time: 100 000 uJ.
            write(RANGE - 50_000 + ticks * 100_000);
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["unit"], "J", "{last}");
    let dense = last["dense_cost"].as_f64().unwrap();
    assert!(dense > 0.0 && dense < 1.0, "{dense} J per inference");
    let saved = std::fs::read_to_string(&out).unwrap();
    assert!(
        saved.contains("J per inference on RAPL package-0"),
        "{saved}"
    );
    assert!(stdout.contains("idle"), "{stdout}");
    let _ = std::fs::remove_dir_all(&root);
}

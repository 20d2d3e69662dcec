//! Every way an architecture can be malformed is an error naming the problem
//! (built through its serialised form, as a user's file would reach the crate).
#![cfg(feature = "serde")]

use energy_prune::arch::{Architecture, zoo};
use serde_json::{Value, json};

fn lenet() -> Value {
    serde_json::to_value(zoo::lenet5().unwrap()).unwrap()
}

fn rejects(mutate: impl FnOnce(&mut Value), says: &str) {
    let mut v = lenet();
    mutate(&mut v);
    let e = serde_json::from_value::<Architecture>(v)
        .unwrap_err()
        .to_string();
    assert!(e.contains(says), "expected `{says}` in: {e}");
}

#[test]
fn malformed_architectures_are_rejected_with_a_reason() {
    let ok: Architecture = serde_json::from_value(lenet()).unwrap();
    assert_eq!(ok.input_width().0, 0);
    assert!(ok.output_width().0 < ok.widths().len());
    let offsets = ok.input_offsets(&ok.layers()[2]);
    assert_eq!(offsets[0].0, 0);
    rejects(|v| v["widths"][1]["channels"] = json!(0), "zero channels");
    rejects(|v| v["input"] = json!(99), "out of range");
    rejects(|v| v["layers"] = json!([]), "at least one prunable layer");
    rejects(
        |v| {
            let first = v["layers"][0].clone();
            v["layers"][1]["name"] = first["name"].clone();
        },
        "names must be unique",
    );
    rejects(|v| v["layers"][0]["output"] = json!(99), "width index");
    rejects(|v| v["layers"][0]["input"] = json!([]), "no input widths");
    rejects(
        |v| v["layers"][0]["input"][0]["spatial"] = json!(4),
        "flattened input",
    );
    rejects(
        |v| v["layers"][0]["kind"]["Conv2d"]["kernel_h"] = json!(99),
        "does not fit",
    );
    rejects(
        |v| v["layers"][0]["kind"]["Conv2d"]["in_channels"] = json!(3),
        "input channels",
    );
    rejects(
        |v| v["layers"][0]["kind"]["Conv2d"]["groups"] = json!(2),
        "groups",
    );
    rejects(
        |v| v["layers"][0]["kind"]["Conv2d"]["stride"] = json!(0),
        "zero size",
    );
    let last = zoo::lenet5().unwrap().layers().len() - 1;
    rejects(
        |v| v["layers"][last]["kind"]["Linear"]["in_features"] = json!(85),
        "inputs",
    );
    rejects(
        |v| v["layers"][last]["kind"]["Linear"]["out_features"] = json!(11),
        "outputs",
    );
    rejects(
        |v| v["layers"][last]["kind"]["Linear"]["in_features"] = json!(1u64 << 41),
        "exceed",
    );
}

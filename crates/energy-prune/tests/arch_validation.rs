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

/// The builder's own checks: one input, known widths, matching maps, one output.
#[test]
fn builder_misuse_is_an_error() {
    use energy_prune::arch::{ArchBuilder, Conv};
    let says = |r: energy_prune::Result<_>, what: &str| {
        let e: energy_prune::Error = r.map(|_: ()| ()).unwrap_err();
        assert!(e.to_string().contains(what), "expected `{what}` in: {e}");
    };
    let mut b = ArchBuilder::new("b");
    let x = b.input(3, 8, 8).unwrap();
    says(b.input(3, 8, 8).map(|_| ()), "twice");
    says(b.input(0, 8, 8).map(|_| ()), "input");
    let y = b.conv2d("c", &x, Conv::new(4, 3).padding(1)).unwrap();
    let small = b.pool(&y, 2, 2, 0, false).unwrap();
    says(
        b.concat(&[&y, &small]).map(|_| ()),
        "different spatial sizes",
    );
    says(b.concat(&[]).map(|_| ()), "no maps");
    says(b.add(&x, &y).map(|_| ()), "residual add");
    let both = b.concat(&[&y, &y]).unwrap();
    says(b.finish(&both).map(|_| ()), "single width");
    // A convolution into a width that does not exist.
    let mut b = ArchBuilder::new("b");
    let x = b.input(3, 8, 8).unwrap();
    let ghost = energy_prune::arch::WidthId(42);
    says(
        b.conv2d("c", &x, Conv::new(4, 3).into_width(ghost))
            .map(|_| ()),
        "unknown width",
    );
    // No input declared.
    let b = ArchBuilder::new("none");
    let mut other = ArchBuilder::new("o");
    let x = other.input(1, 4, 4).unwrap();
    says(b.finish(&x).map(|_| ()), "no input");
}

//! Calibrated model files are validated when read: a file that would give
//! non-finite or negative costs, gradients through a zero normalisation, grids
//! outside the widths, or a kind this crate does not know is refused with a message
//! saying what is wrong, not accepted to fail (or mislead) later.
#![cfg(feature = "serde")]

use energy_prune::arch::zoo;
use energy_prune::energy::{
    Bilinear, CalibratedModel, FitOptions, LayerOracle, LayerTable, ProfileSet, Protocol,
    WidthCostModel,
};
use serde_json::{Value, json};

fn profiles() -> ProfileSet {
    energy_prune_testing::data::lenet5_profiles(60, 2)
}

struct Flat;
impl LayerOracle for Flat {
    fn measure_layer(&mut self, l: usize, c: usize, d: usize) -> energy_prune::Result<f64> {
        Ok(1.0 + (l * c * d) as f64)
    }
}

fn models() -> (Value, Value) {
    let arch = zoo::lenet5().unwrap();
    let data = profiles();
    let bilinear = Bilinear::fit(&arch, &data, &FitOptions::default())
        .unwrap()
        .model;
    let quick = Protocol {
        warmup_passes: 0,
        repeats: 1,
        ..Default::default()
    };
    let mut table = LayerTable::measure(&arch, &mut Flat, 3, 0.25, &quick).unwrap();
    table.fit(&data, &FitOptions::default()).unwrap();
    (
        serde_json::to_value(CalibratedModel::Bilinear(bilinear)).unwrap(),
        serde_json::to_value(CalibratedModel::LayerTable(table)).unwrap(),
    )
}

fn load(v: &Value) -> energy_prune::Result<CalibratedModel> {
    let dir = std::env::temp_dir().join(format!("ep-cal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One file per call: the tests run in parallel and may load equal models.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{k}-{:x}.json", fxhash(&v.to_string())));
    std::fs::write(&path, v.to_string()).unwrap();
    let r = CalibratedModel::load_json(&path);
    let _ = std::fs::remove_file(&path);
    r
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn refused(v: &Value, says: &str) {
    match load(v) {
        Ok(_) => panic!("accepted ({says}): {v}"),
        Err(e) => assert!(e.to_string().contains(says), "expected `{says}` in: {e}"),
    }
}

#[test]
fn calibrated_models_are_validated_on_load() {
    let (bilinear, table) = models();
    let arch = zoo::lenet5().unwrap();
    let full: Vec<usize> = arch.widths().iter().map(|w| w.channels).collect();
    for v in [&bilinear, &table] {
        let m = load(v).unwrap();
        assert!(m.cost_of_widths(&full).unwrap() > 0.0);
    }
    // Coefficients that overflow: Ok(inf) costs before.
    let mut v = bilinear.clone();
    v["coefficients"][1] = json!(1e308);
    v["coefficients"][2] = json!(1e308);
    refused(&v, "overflow at the dense widths");
    // A zero normalisation: infinite gradients before.
    let mut v = bilinear.clone();
    v["layers"][0]["in_norm"] = json!(0.0);
    refused(&v, "input normalisation 0");
    // Negative costs.
    let mut v = bilinear.clone();
    v["coefficients"][0] = json!(-1e12);
    refused(&v, "must not predict negative costs");
    let mut v = table.clone();
    v["layers"][0]["cost"][0] = json!(-5.0);
    refused(&v, "non-negative cost");
    // An unknown kind is not read as a bilinear model.
    let mut v = bilinear.clone();
    v["kind"] = json!("quadratic");
    refused(&v, "known kind");
    // A kind-less bilinear file (the older format) still loads.
    let mut v = bilinear.clone();
    v.as_object_mut().unwrap().remove("kind");
    assert!(load(&v).is_ok());
    // Layer-table grid points above the widths, and a width of 0 channels.
    let mut v = table.clone();
    let outputs = v["layers"][0]["outputs"].as_array().unwrap().len();
    v["layers"][0]["outputs"][outputs - 1] = json!(10_000);
    refused(&v, "outside");
    let mut v = table.clone();
    v["max"][1] = json!(0);
    refused(&v, "maximum of 0 channels");
    let mut v = table.clone();
    v["scale"] = json!(0.0);
    refused(&v, "scale > 0");
}

#[test]
fn models_are_checked_against_the_network() {
    let (bilinear, _) = models();
    let m = load(&bilinear).unwrap();
    let lenet = zoo::lenet5().unwrap();
    assert!(m.check_architecture(&lenet).is_ok());
    // A model fitted for another network of as many widths (other channels).
    let mut v = bilinear.clone();
    v["max"][1] = json!(12.0);
    let other = load(&v).unwrap();
    let e = other.check_architecture(&lenet).unwrap_err().to_string();
    assert!(e.contains("fitted for another network"), "{e}");
}

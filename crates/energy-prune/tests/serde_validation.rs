//! Every deserialised type is validated on the way in: no invalid value can be
//! constructed through serde.
#![cfg(feature = "serde")]

use energy_prune::arch::{Architecture, zoo};
use energy_prune::energy::{
    Bilinear, CostOracle, FitOptions, ModelOracle, ProfileSet, SystolicArray, SystolicConfig,
    WidthSampler,
};
use energy_prune::network::PruningPlan;
use serde_json::{Value, json};

fn arch_json() -> Value {
    serde_json::to_value(zoo::lenet5().unwrap()).unwrap()
}

#[test]
fn architectures_are_validated_when_read() {
    let ok: Architecture = serde_json::from_value(arch_json()).unwrap();
    assert_eq!(ok, zoo::lenet5().unwrap());
    let mut stride0 = arch_json();
    stride0["layers"][0]["kind"]["Conv2d"]["stride"] = json!(0);
    assert!(serde_json::from_value::<Architecture>(stride0).is_err());
    let mut groups0 = arch_json();
    groups0["layers"][0]["kind"]["Conv2d"]["groups"] = json!(0);
    assert!(serde_json::from_value::<Architecture>(groups0).is_err());
    let mut empty = arch_json();
    empty["layers"] = json!([]);
    let err = serde_json::from_value::<Architecture>(empty).unwrap_err();
    assert!(
        err.to_string().contains("at least one prunable layer"),
        "{err}"
    );
}

#[test]
fn configs_plans_profiles_and_models_are_validated_when_read() {
    let mut cfg = serde_json::to_value(SystolicConfig::default()).unwrap();
    cfg["rows"] = json!(0);
    assert!(serde_json::from_value::<SystolicConfig>(cfg).is_err());

    // Plans: a round trip keeps the identity; bad indices, missing identity (an
    // older format) and another schema are load errors.
    let lenet = zoo::lenet5().unwrap();
    let plan = PruningPlan::full(&lenet);
    let v = serde_json::to_value(&plan).unwrap();
    assert_eq!(
        serde_json::from_value::<PruningPlan>(v.clone()).unwrap(),
        plan
    );
    let with_kept = |kept: Value| {
        let mut p = v.clone();
        p["kept"] = kept;
        serde_json::from_value::<PruningPlan>(p)
    };
    assert!(with_kept(json!([[0, 1], []])).is_err());
    assert!(with_kept(json!([[1, 0]])).is_err());
    let old = serde_json::from_value::<PruningPlan>(json!({"kept": [[0, 2]]})).unwrap_err();
    assert!(old.to_string().contains("not a pruning plan"), "{old}");
    // A schema 1 plan (identity, no provenance) says why it cannot be used.
    let mut v1 = v.clone();
    v1["schema"] = json!(1);
    v1.as_object_mut().unwrap().remove("provenance");
    let e = serde_json::from_value::<PruningPlan>(v1).unwrap_err();
    assert!(e.to_string().contains("earlier version"), "{e}");
    let mut future = v.clone();
    future["schema"] = json!(99);
    let e = serde_json::from_value::<PruningPlan>(future).unwrap_err();
    assert!(e.to_string().contains("newer version"), "{e}");
    let mut edited = v.clone();
    edited.as_object_mut().unwrap().remove("provenance");
    let e = serde_json::from_value::<PruningPlan>(edited).unwrap_err();
    assert!(e.to_string().contains("provenance"), "{e}");
    let mut foreign = v;
    foreign["fingerprint"] = json!(12345);
    let foreign: PruningPlan = serde_json::from_value(foreign).unwrap();
    assert!(
        foreign
            .check(&lenet)
            .unwrap_err()
            .to_string()
            .contains("fingerprint")
    );

    let bad_profile = json!({"num_widths": 2, "widths": [[1, 2]], "costs": [-1.0]});
    assert!(serde_json::from_value::<ProfileSet>(bad_profile).is_err());
    let short = json!({"num_widths": 2, "widths": [[1, 2], [3]], "costs": [1.0, 2.0]});
    assert!(serde_json::from_value::<ProfileSet>(short).is_err());

    // A fitted model round-trips; one with an index out of range is rejected.
    let arch = zoo::lenet5().unwrap();
    let truth = SystolicArray::new(&arch, SystolicConfig::default()).unwrap();
    let mut oracle = ModelOracle(&truth);
    let mut sampler = WidthSampler::new(&arch, 1);
    let mut data = ProfileSet::new(arch.widths().len());
    for _ in 0..60 {
        let w = sampler.sample();
        let c = oracle.measure(&w).unwrap();
        data.push(w, c).unwrap();
    }
    let model = Bilinear::fit(&arch, &data, &FitOptions::default())
        .unwrap()
        .model;
    let v = serde_json::to_value(&model).unwrap();
    assert_eq!(
        serde_json::from_value::<Bilinear>(v.clone()).unwrap(),
        model
    );
    let mut bad_term = v.clone();
    bad_term["terms"][0] = json!({"Product": 99});
    let err = serde_json::from_value::<Bilinear>(bad_term).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
    let mut bad_layer = v.clone();
    bad_layer["layers"][0]["output"] = json!(1000);
    assert!(serde_json::from_value::<Bilinear>(bad_layer).is_err());
    let mut bad_coef = v;
    bad_coef["coefficients"] = json!([1.0]);
    assert!(serde_json::from_value::<Bilinear>(bad_coef).is_err());
}

#[test]
fn plans_keep_their_provenance_on_disk() {
    use energy_prune::network::{CostModelRecord, Provenance};
    let lenet = zoo::lenet5().unwrap();
    let plan = PruningPlan::leading(&lenet, &[1, 3, 8, 60, 40, 10])
        .unwrap()
        .with_provenance(Provenance {
            cost_model: Some(CostModelRecord {
                kind: "systolic".into(),
                parameters: serde_json::to_string(&SystolicConfig::default()).unwrap(),
            }),
            budget: Some(0.3),
            budget_unit: Some("fraction of dense energy".into()),
            predicted_cost: Some(0.29),
            precision: Some(vec![
                energy_prune::energy::LayerPrecision::int(4, 8).unwrap();
                5
            ]),
            crate_version: "0.0.0-ignored".into(),
        });
    // The crate version is always the writer's own.
    assert_eq!(
        plan.provenance().crate_version,
        env!("CARGO_PKG_VERSION").to_string()
    );
    let dir = std::env::temp_dir().join(format!("ep-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("plan.json");
    plan.save_json(&path).unwrap();
    let back = PruningPlan::load_json(&path).unwrap();
    assert_eq!(back, plan);
    let rec = back.provenance().cost_model.as_ref().unwrap();
    let cfg: SystolicConfig = serde_json::from_str(&rec.parameters).unwrap();
    assert_eq!(cfg, SystolicConfig::default());
    assert_eq!(
        back.provenance().precision.as_ref().unwrap()[0].to_string(),
        "int4/int8"
    );
    assert!(std::fs::read_to_string(&path).unwrap().contains("\"int4\""));
    // Applying it to another architecture is an error.
    assert!(back.check(&zoo::alexnet().unwrap()).is_err());
    // A precision of another length, or an unknown format, is refused.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"int4\"", "\"int1\"", 1)).unwrap();
    assert!(PruningPlan::load_json(&path).is_err());
    let short = back.clone().with_provenance(Provenance {
        precision: Some(vec![energy_prune::energy::LayerPrecision::REFERENCE; 2]),
        ..back.provenance().clone()
    });
    assert!(short.check(&lenet).is_err());
    // A foreign JSON file says it is not a plan.
    std::fs::write(&path, r#"{"hello": 1}"#).unwrap();
    let e = PruningPlan::load_json(&path).unwrap_err().to_string();
    assert!(e.contains("not a usable pruning plan"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

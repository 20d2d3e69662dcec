//! ONNX external data: models whose tensors live in side files. A file written
//! by ONNX's own Python writer (`onnx.save_model(..., save_as_external_data=True)`,
//! `scripts/make_onnx_fixtures.py`) is read; models saved with their weights in
//! a side file round-trip bit for bit; hostile references are refused before
//! anything is allocated for them.

use std::path::{Path, PathBuf};

use energy_prune::Error;
use energy_prune::network::{Network, NetworkMut, NetworkState};
use energy_prune_onnx::{ALIGNMENT, ExternalData, OnnxModel};
use energy_prune_testing::onnx::proto::{ModelProto, StringStringEntryProto, TensorProto};
use prost::Message;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx")
}

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ep-external-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn weights(m: &OnnxModel) -> Vec<Vec<f32>> {
    NetworkState::from_network(m).unwrap().weights
}

fn probe(m: &OnnxModel) -> Vec<f32> {
    let n: usize = m.input_shape().iter().product();
    let x: Vec<f32> = (0..2 * n)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    m.run(&x, 2).unwrap()
}

#[test]
fn a_file_written_by_onnx_with_external_data_reads_as_the_inline_one() {
    let inline = OnnxModel::load(fixtures().join("lenet5_dynamo.onnx"), None).unwrap();
    let external = OnnxModel::load(fixtures().join("external_lenet5.onnx"), None).unwrap();
    assert!(inline.external_files().is_empty());
    assert_eq!(
        external.external_files(),
        [fixtures().join("external_lenet5.onnx.data")]
    );
    assert_eq!(
        external.architecture().fingerprint(),
        inline.architecture().fingerprint()
    );
    assert_eq!(weights(&external), weights(&inline));
    assert_eq!(probe(&external), probe(&inline));
    // The model file alone holds the small tensors only.
    let len = |f: &str| std::fs::metadata(fixtures().join(f)).unwrap().len();
    assert!(len("external_lenet5.onnx") * 20 < len("external_lenet5.onnx.data"));
}

#[test]
fn saved_with_a_side_file_the_model_round_trips_bit_for_bit() {
    let dir = scratch("round-trip");
    for (fixture, threshold) in [
        ("lenet5.onnx", 0),
        ("tinynet_dynamo.onnx", 1024),
        ("qdq_lenet5_mixed.onnx", 64),
    ] {
        let mut model = OnnxModel::load(fixtures().join(fixture), None).unwrap();
        // Pruned weights, so that the current weights (not the file's) are written.
        let mut w = weights(&model);
        for (l, layer) in w.iter_mut().enumerate() {
            layer.iter_mut().step_by(3).for_each(|v| *v = 0.0);
            model.write_weights(l, layer).unwrap();
        }
        let inline_path = dir.join(format!("inline_{fixture}"));
        model.save(&inline_path).unwrap();
        let inline = OnnxModel::load(&inline_path, None).unwrap();

        let path = dir.join(format!("ext_{fixture}"));
        let ext = ExternalData::new(format!("weights/{fixture}.bin")).with_threshold(threshold);
        model.save_with_external_data(&path, &ext).unwrap();
        let data = dir.join("weights").join(format!("{fixture}.bin"));
        let back = OnnxModel::load(&path, None).unwrap();
        assert_eq!(
            back.external_files(),
            std::slice::from_ref(&data),
            "{fixture}"
        );
        assert_eq!(weights(&back), weights(&inline), "{fixture}");
        assert_eq!(probe(&back), probe(&inline), "{fixture}");
        assert_eq!(back.precision(), inline.precision(), "{fixture}");

        // Every tensor of `threshold` bytes or more is in the side file, each at an
        // aligned offset, inside the file, with the right length.
        let proto = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
        let data_len = std::fs::metadata(&data).unwrap().len();
        let graph = proto.graph.unwrap();
        let mut external = 0;
        for t in &graph.initializer {
            let get = |k: &str| {
                t.external_data
                    .iter()
                    .find(|e| e.key == k)
                    .map(|e| e.value.clone())
            };
            match get("location") {
                Some(loc) => {
                    external += 1;
                    assert_eq!(loc, format!("weights/{fixture}.bin"));
                    assert!(t.raw_data.is_empty());
                    let offset: u64 = get("offset").unwrap().parse().unwrap();
                    let length: u64 = get("length").unwrap().parse().unwrap();
                    assert_eq!(offset % ALIGNMENT, 0);
                    assert!(offset + length <= data_len);
                    assert!(length as usize >= threshold, "{}", t.name);
                }
                None => assert!(t.raw_data.len() < threshold.max(1), "{}", t.name),
            }
        }
        let layers = model.architecture().layers().len();
        assert!(
            external >= if threshold == 0 { layers } else { 1 },
            "{fixture}"
        );
    }
    // Layers of several MiB (read in 1 MiB chunks straight into the weights).
    let proto = energy_prune_testing::onnx::torchvision::squeezenet1_0(5);
    let inline = OnnxModel::from_bytes(&proto.encode_to_vec(), None, &dir.join("sq.onnx")).unwrap();
    assert!(
        inline
            .architecture()
            .layers()
            .iter()
            .any(|l| 4 * l.weight_count() > 1 << 20)
    );
    let path = dir.join("sq_ext.onnx");
    inline
        .save_with_external_data(&path, &ExternalData::beside(&path))
        .unwrap();
    let back = OnnxModel::load(&path, None).unwrap();
    assert_eq!(weights(&back), weights(&inline));
    assert_eq!(
        back.architecture().fingerprint(),
        inline.architecture().fingerprint()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The lenet5 fixture saved with every tensor in `w.bin`, as a proto to tamper with.
fn external_copy(dir: &Path) -> ModelProto {
    let model = OnnxModel::load(fixtures().join("lenet5.onnx"), None).unwrap();
    let path = dir.join("m.onnx");
    model
        .save_with_external_data(&path, &ExternalData::new("w.bin").with_threshold(0))
        .unwrap();
    ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap()
}

fn set(t: &mut TensorProto, key: &str, value: &str) {
    t.external_data.retain(|e| e.key != key);
    t.external_data.push(StringStringEntryProto {
        key: key.into(),
        value: value.into(),
    });
}

/// The first externally stored tensor of more than 1 KiB.
fn big(p: &mut ModelProto) -> &mut TensorProto {
    p.graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| {
            t.external_data
                .iter()
                .any(|e| e.key == "length" && e.value.parse::<u64>().unwrap() > 1024)
        })
        .unwrap()
}

/// A change to a model's proto.
type Tamper = Box<dyn Fn(&mut ModelProto)>;

#[test]
fn hostile_references_are_refused_with_the_tensor_named() {
    let dir = scratch("hostile");
    let original = external_copy(&dir);
    let data_len = std::fs::metadata(dir.join("w.bin")).unwrap().len();
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "absolute",
            Box::new(|p| set(big(p), "location", "/etc/passwd")),
        ),
        ("parent", Box::new(|p| set(big(p), "location", "../w.bin"))),
        (
            "nested parent",
            Box::new(|p| set(big(p), "location", "a/../../w.bin")),
        ),
        ("empty", Box::new(|p| set(big(p), "location", ""))),
        (
            "no location",
            Box::new(|p| big(p).external_data.retain(|e| e.key != "location")),
        ),
        (
            "offset past the end",
            Box::new(move |p| set(big(p), "offset", &data_len.to_string())),
        ),
        (
            "offset overflow",
            Box::new(|p| set(big(p), "offset", &u64::MAX.to_string())),
        ),
        ("not a number", Box::new(|p| set(big(p), "offset", "12kB"))),
        (
            "length unlike the dims",
            Box::new(|p| set(big(p), "length", "8")),
        ),
        (
            "huge dims",
            Box::new(|p| big(p).dims = vec![1 << 40, 1 << 20]),
        ),
        ("string tensor", Box::new(|p| big(p).data_type = 8)),
        // Every tensor reading the start of the file: the regions overlap, and
        // together they would read more than the file holds.
        (
            "overlapping regions",
            Box::new(|p| {
                for t in &mut p.graph.as_mut().unwrap().initializer {
                    set(t, "offset", "0");
                }
            }),
        ),
    ];
    for (what, tamper) in cases {
        let mut p = original.clone();
        tamper(&mut p);
        let path = dir.join("hostile.onnx");
        std::fs::write(&path, p.encode_to_vec()).unwrap();
        let err = OnnxModel::load(&path, None).expect_err(what);
        assert!(matches!(err, Error::CorruptData { .. }), "{what}: {err:?}");
        let msg = err.to_string();
        eprintln!("{what}: {msg}");
        assert!(msg.contains("tensor `"), "{what}: {msg}");
    }
    // A missing side file is an I/O error naming it.
    let mut p = original.clone();
    set(big(&mut p), "location", "gone.bin");
    std::fs::write(dir.join("missing.onnx"), p.encode_to_vec()).unwrap();
    let err = OnnxModel::load(dir.join("missing.onnx"), None).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("gone.bin"), "{err}");
    // A truncated side file.
    let bytes = std::fs::read(dir.join("w.bin")).unwrap();
    std::fs::write(dir.join("w.bin"), &bytes[..bytes.len() / 2]).unwrap();
    let err = OnnxModel::load(dir.join("m.onnx"), None).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_save_locations_are_refused_and_nothing_is_half_written() {
    let dir = scratch("save");
    let model = OnnxModel::load(fixtures().join("lenet5.onnx"), None).unwrap();
    let path = dir.join("m.onnx");
    for bad in ["/tmp/w.bin", "../w.bin", "", "m.onnx"] {
        let err = model
            .save_with_external_data(&path, &ExternalData::new(bad))
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidParameter { .. }),
            "{bad}: {err:?}"
        );
    }
    assert!(!path.exists());
    // The side file cannot be written (a directory is in its place): neither
    // file appears, no temporary is left.
    std::fs::create_dir(dir.join("w.bin")).unwrap();
    let err = model
        .save_with_external_data(&path, &ExternalData::new("w.bin"))
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(!path.exists());
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
    // An earlier model stays as it was when a later save fails.
    std::fs::remove_dir(dir.join("w.bin")).unwrap();
    model
        .save_with_external_data(&path, &ExternalData::new("w.bin"))
        .unwrap();
    let before = (
        std::fs::read(&path).unwrap(),
        std::fs::read(dir.join("w.bin")).unwrap(),
    );
    std::fs::create_dir(dir.join("other.bin")).unwrap();
    assert!(
        model
            .save_with_external_data(&path, &ExternalData::new("other.bin"))
            .is_err()
    );
    assert_eq!(std::fs::read(&path).unwrap(), before.0);
    assert_eq!(std::fs::read(dir.join("w.bin")).unwrap(), before.1);
    std::fs::remove_dir_all(&dir).unwrap();
}

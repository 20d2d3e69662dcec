//! The training loop, optimizers and kernel entry points under bad input and
//! early stops: errors name the problem and nothing panics.

use energy_prune::Error;
use energy_prune::arch::{ArchBuilder, Conv, Conv2dGeometry, SlotLayout, zoo};
use energy_prune::network::{Network, NetworkMut, PruningPlan, Trainable};
use energy_prune::train::{
    Adam, Control, CrossEntropy, InputMaskAdam, LossFn, Optimizer, Sgd, train_epoch,
};
use energy_prune_nn::{Cnn, LayerSpec};
use energy_prune_testing::nn::kernels::{conv2d_backward, conv2d_direct, conv2d_forward};
use rand::{SeedableRng, rngs::ChaCha12Rng};

use common::synthetic;
use energy_prune_testing::data as common;

fn tiny() -> Cnn {
    let specs = [
        LayerSpec::conv("conv", 4, 3),
        LayerSpec::Relu,
        LayerSpec::linear("fc", 4),
    ];
    Cnn::new((1, 8, 8), &specs, 3).unwrap()
}

#[test]
fn train_epoch_rejects_bad_input_and_stops_on_request() {
    let data = synthetic(64, 1);
    let mut net = tiny();
    let mut opt = Sgd::new(0.05, 0.9, 0.0).unwrap();
    let mut rng = ChaCha12Rng::seed_from_u64(1);
    let mut hook = |_: &mut Cnn, _: &Sgd, _: usize| Ok(Control::Continue);
    let e = train_epoch(
        &mut net,
        &mut opt,
        &data,
        &mut CrossEntropy,
        0,
        &mut rng,
        &mut hook,
    )
    .unwrap_err();
    assert!(e.to_string().contains("batch_size"), "{e}");
    let other = energy_prune::train::Dataset::new(vec![0.0; 2 * 9], vec![0, 1], 1, 3, 3).unwrap();
    let e = train_epoch(
        &mut net,
        &mut opt,
        &other,
        &mut CrossEntropy,
        8,
        &mut rng,
        &mut hook,
    )
    .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    // A diverging loss is an error naming the step.
    let mut nan_loss =
        LossFn(|_: &[f32], _: &energy_prune::train::Batch<'_>, _: f32, _: &mut [f32]| Ok(f64::NAN));
    let e = train_epoch(
        &mut net,
        &mut opt,
        &data,
        &mut nan_loss,
        8,
        &mut rng,
        &mut hook,
    )
    .unwrap_err();
    assert!(e.to_string().contains("training loss"), "{e}");
    // A hook asking to stop ends the epoch after that step.
    let mut stop = |_: &mut Cnn, _: &Sgd, step: usize| {
        Ok(if step == 2 {
            Control::Stop
        } else {
            Control::Continue
        })
    };
    let stats = train_epoch(
        &mut net,
        &mut opt,
        &data,
        &mut CrossEntropy,
        8,
        &mut rng,
        &mut stop,
    )
    .unwrap();
    assert!(stats.stopped);
    assert_eq!((stats.steps, stats.images), (3, 24));
}

#[test]
fn optimizers_expose_and_reset_their_state() {
    let mut adam = Adam::new(1e-3).unwrap();
    adam.set_learning_rate(5e-4);
    assert_eq!(adam.learning_rate(), 5e-4);
    let mut net = tiny();
    let data = synthetic(16, 2);
    let mut rng = ChaCha12Rng::seed_from_u64(2);
    let mut hook = |_: &mut Cnn, _: &Adam, _: usize| Ok(Control::Continue);
    train_epoch(
        &mut net,
        &mut adam,
        &data,
        &mut CrossEntropy,
        8,
        &mut rng,
        &mut hook,
    )
    .unwrap();
    assert!(adam.preconditioner().is_some());
    Optimizer::reset(&mut adam);
    let mut masks = InputMaskAdam::new(0.01, 1e-4).unwrap();
    masks.set_learning_rate(0.02);
    assert_eq!(masks.learning_rate(), 0.02);
    Optimizer::reset(&mut masks);
    assert!(
        InputMaskAdam::new(0.01, -1.0)
            .unwrap_err()
            .to_string()
            .contains("l1")
    );
    assert!(InputMaskAdam::new(0.01, f32::NAN).is_err());
    let mut sgd = Sgd::new(0.1, 0.0, 0.0).unwrap();
    sgd.set_learning_rate(0.2);
    assert_eq!(sgd.learning_rate(), 0.2);
    assert!(sgd.preconditioner().is_none());
    // A step that makes a parameter non-finite is an error naming it.
    let mut huge = Sgd::new(1e38, 0.0, 0.0).unwrap();
    let mut net = tiny();
    let x = vec![1e30f32; net.input_len() * 2];
    let mut logits = Vec::new();
    net.forward(&x, 2, &mut logits).unwrap();
    let grad = vec![1e30f32; logits.len()];
    net.backward(&grad).unwrap();
    let e = huge.step(&mut net).unwrap_err();
    assert!(matches!(e, Error::NonFinite { .. }), "{e}");
}

#[test]
fn kernel_entry_points_check_every_buffer() {
    let g = Conv2dGeometry {
        in_channels: 2,
        in_h: 5,
        in_w: 5,
        out_channels: 3,
        kernel_h: 3,
        kernel_w: 3,
        stride: 1,
        padding: 1,
        groups: 1,
    };
    let batch = 2;
    let (xl, wl, yl) = (2 * batch * 25, 3 * 2 * 9, 3 * batch * 25);
    let cl = 2 * 9 * batch * 25;
    let (x, w, b) = (vec![0.5; xl], vec![0.1; wl], vec![0.0; 3]);
    let (mut y, mut col) = (vec![0.0; yl], vec![0.0; cl]);
    conv2d_forward(&g, batch, &x, &w, Some(&b), &mut col, &mut y).unwrap();
    let mut y2 = vec![0.0; yl];
    conv2d_direct(&g, batch, &x, &w, Some(&b), &mut y2).unwrap();
    for (a, c) in y.iter().zip(&y2) {
        assert!((a - c).abs() < 1e-5);
    }
    let short = |what: &str, r: energy_prune::Result<()>| {
        let e = r.unwrap_err();
        assert!(e.to_string().contains(what), "{what}: {e}");
    };
    short(
        "input",
        conv2d_forward(&g, batch, &x[1..], &w, None, &mut col, &mut y),
    );
    short(
        "weights",
        conv2d_direct(&g, batch, &x, &w[1..], None, &mut y),
    );
    short(
        "output",
        conv2d_direct(&g, batch, &x, &w, None, &mut y[1..]),
    );
    short(
        "bias",
        conv2d_direct(&g, batch, &x, &w, Some(&b[1..]), &mut y),
    );
    short(
        "im2col",
        conv2d_forward(&g, batch, &x, &w, None, &mut col[1..], &mut y),
    );
    short(
        "bias",
        conv2d_forward(&g, batch, &x, &w, Some(&b[..1]), &mut col, &mut y),
    );
    let bad = Conv2dGeometry { stride: 0, ..g };
    short(
        "zero size",
        conv2d_direct(&bad, batch, &x, &w, None, &mut y),
    );
    let dy = vec![1.0; yl];
    let (mut dw, mut db, mut dx, mut dcol) =
        (vec![0.0; wl], vec![0.0; 3], vec![0.0; xl], vec![0.0; cl]);
    conv2d_backward(
        &g,
        batch,
        &x,
        &w,
        &col,
        &dy,
        &mut dw,
        Some(&mut db),
        Some(&mut dx),
        &mut dcol,
    )
    .unwrap();
    assert!(db.iter().all(|v| *v == (batch * 25) as f32));
    short(
        "weight gradient",
        conv2d_backward(
            &g,
            batch,
            &x,
            &w,
            &col,
            &dy,
            &mut dw[1..],
            None,
            None,
            &mut dcol,
        ),
    );
    short(
        "bias gradient",
        conv2d_backward(
            &g,
            batch,
            &x,
            &w,
            &col,
            &dy,
            &mut dw,
            Some(&mut db[1..]),
            None,
            &mut dcol,
        ),
    );
    short(
        "input gradient",
        conv2d_backward(
            &g,
            batch,
            &x,
            &w,
            &col,
            &dy,
            &mut dw,
            None,
            Some(&mut dx[1..]),
            &mut dcol,
        ),
    );
    short(
        "im2col gradient",
        conv2d_backward(
            &g,
            batch,
            &x,
            &w,
            &col,
            &dy,
            &mut dw,
            None,
            None,
            &mut dcol[1..],
        ),
    );
}

#[test]
fn slot_layouts_cover_every_weight_once() {
    for arch in [zoo::lenet5().unwrap(), zoo::mobilenet_v1().unwrap()] {
        for (l, layer) in arch.layers().iter().enumerate() {
            let mut hit = vec![0u8; layer.weight_count()];
            for slots in SlotLayout::of_layer(&arch, l).unwrap() {
                assert_eq!(slots.channels(), arch.widths()[slots.width].channels);
                slots.for_each_run_with_output(|o, k, r| {
                    assert!(o < layer.out_channels() && k < slots.channels());
                    r.for_each(|i| hit[i] += 1);
                });
            }
            assert!(hit.iter().all(|h| *h == 1), "layer {}", layer.name);
        }
    }
    // Grouped (non-depthwise) convolutions cannot be channel-pruned: a clear error.
    let mut b = ArchBuilder::new("g");
    let x = b.input(4, 6, 6).unwrap();
    let y = b.conv2d("g", &x, Conv::new(4, 3).groups(2)).unwrap();
    let arch = b.finish(&y).unwrap();
    let e = SlotLayout::of_layer(&arch, 0).unwrap_err();
    assert!(e.to_string().contains("grouped"), "{e}");
}

#[test]
fn compaction_carries_input_masks() {
    let mut net = tiny();
    net.enable_input_mask(1).unwrap();
    let arch = net.architecture().clone();
    let fc_in = arch.layers()[1].in_features();
    let mask: Vec<f32> = (0..fc_in).map(|i| (i % 3 != 0) as u8 as f32).collect();
    net.write_input_mask(1, &mask).unwrap();
    let mut kept = PruningPlan::full(&arch).kept().to_vec();
    let conv_width = arch.layers()[0].output.0;
    kept[conv_width] = vec![0, 2];
    let plan = PruningPlan::new(&arch, kept).unwrap();
    plan.apply(&mut net).unwrap();
    let compact = net.compact(&plan).unwrap();
    let mut m = vec![0.0; compact.architecture().layers()[1].in_features()];
    assert!(compact.read_input_mask(1, &mut m).unwrap());
    let per = fc_in / 4;
    let expect: Vec<f32> = [0usize, 2]
        .iter()
        .flat_map(|&c| mask[c * per..(c + 1) * per].iter().copied())
        .collect();
    assert_eq!(m, expect);
}

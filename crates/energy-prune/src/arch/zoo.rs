//! Ready-made descriptions of well-known networks (ImageNet models at 224 x 224).
//!
//! | function | layers | parameters | MACs |
//! |---|---|---|---|
//! | [`lenet5`] | 2 conv + 3 FC, 1x32x32 input | 61 706 | 416 520 |
//! | [`alexnet`] | torchvision single tower | 61.1 M | 0.71 G |
//! | [`squeezenet1_0`] | torchvision, ceil-mode pools | 1.25 M | 0.82 G |
//! | [`mobilenet_v1`] | width 1.0 | 4.2 M | 569 M |
//! | [`vgg16`] | configuration D | 138.4 M | 15.5 G |
//! | [`resnet18`] | basic blocks, 1x1 downsample | 11.7 M | 1.82 G |
//!
//! Batch normalisation parameters are not counted (they are not prunable weights).

use super::{ArchBuilder, Architecture, Conv, FeatureMap};
use crate::error::{Error, Result};

/// Names accepted by [`by_name`].
pub const NAMES: [&str; 6] = [
    "lenet5",
    "alexnet",
    "squeezenet",
    "mobilenet",
    "vgg16",
    "resnet18",
];

/// Look up a zoo architecture by name (see [`NAMES`]).
///
/// # Errors
/// [`Error::InvalidParameter`] for an unknown name, listing the known ones.
pub fn by_name(name: &str) -> Result<Architecture> {
    match name {
        "lenet5" => lenet5(),
        "alexnet" => alexnet(),
        "squeezenet" | "squeezenet1_0" => squeezenet1_0(),
        "mobilenet" | "mobilenet_v1" => mobilenet_v1(),
        "vgg16" => vgg16(),
        "resnet18" => resnet18(),
        _ => Err(Error::param(
            "network",
            name,
            format!("unknown network; choose one of {NAMES:?}"),
        )),
    }
}

/// The LeNet-5 variant of the ICLR 2019 paper: 1x32x32 input, conv 6@5x5, max-pool 2,
/// conv 16@5x5, max-pool 2, FC 400-120-84-10.
///
/// # Errors
/// Never in practice; the `Result` mirrors the builder.
pub fn lenet5() -> Result<Architecture> {
    let mut b = ArchBuilder::new("lenet5");
    let x = b.input(1, 32, 32)?;
    let x = b.conv2d("conv1", &x, Conv::new(6, 5))?;
    let x = b.pool(&x, 2, 2, 0, false)?;
    let x = b.conv2d("conv2", &x, Conv::new(16, 5))?;
    let x = b.pool(&x, 2, 2, 0, false)?;
    let x = b.linear("fc1", &x, 120, true)?;
    let x = b.linear("fc2", &x, 84, true)?;
    let x = b.linear("fc3", &x, 10, true)?;
    b.finish(&x)
}

/// AlexNet in torchvision's single-tower layout.
///
/// # Errors
/// Never in practice.
pub fn alexnet() -> Result<Architecture> {
    let mut b = ArchBuilder::new("alexnet");
    let x = b.input(3, 224, 224)?;
    let x = b.conv2d("conv1", &x, Conv::new(64, 11).stride(4).padding(2))?;
    let x = b.pool(&x, 3, 2, 0, false)?;
    let x = b.conv2d("conv2", &x, Conv::new(192, 5).padding(2))?;
    let x = b.pool(&x, 3, 2, 0, false)?;
    let x = b.conv2d("conv3", &x, Conv::new(384, 3).padding(1))?;
    let x = b.conv2d("conv4", &x, Conv::new(256, 3).padding(1))?;
    let x = b.conv2d("conv5", &x, Conv::new(256, 3).padding(1))?;
    let x = b.pool(&x, 3, 2, 0, false)?;
    let x = b.linear("fc6", &x, 4096, true)?;
    let x = b.linear("fc7", &x, 4096, true)?;
    let x = b.linear("fc8", &x, 1000, true)?;
    b.finish(&x)
}

fn fire(
    b: &mut ArchBuilder,
    name: &str,
    x: &FeatureMap,
    squeeze: usize,
    expand: usize,
) -> Result<FeatureMap> {
    let s = b.conv2d(&format!("{name}.squeeze"), x, Conv::new(squeeze, 1))?;
    let e1 = b.conv2d(&format!("{name}.expand1x1"), &s, Conv::new(expand, 1))?;
    let e3 = b.conv2d(
        &format!("{name}.expand3x3"),
        &s,
        Conv::new(expand, 3).padding(1),
    )?;
    b.concat(&[&e1, &e3])
}

/// SqueezeNet 1.0 as in torchvision (max-pools in ceil mode: 224 -> 109 -> 54 -> 27 -> 13).
///
/// # Errors
/// Never in practice.
pub fn squeezenet1_0() -> Result<Architecture> {
    let mut b = ArchBuilder::new("squeezenet1_0");
    let x = b.input(3, 224, 224)?;
    let x = b.conv2d("conv1", &x, Conv::new(96, 7).stride(2))?;
    let x = b.pool(&x, 3, 2, 0, true)?;
    let x = fire(&mut b, "fire2", &x, 16, 64)?;
    let x = fire(&mut b, "fire3", &x, 16, 64)?;
    let x = fire(&mut b, "fire4", &x, 32, 128)?;
    let x = b.pool(&x, 3, 2, 0, true)?;
    let x = fire(&mut b, "fire5", &x, 32, 128)?;
    let x = fire(&mut b, "fire6", &x, 48, 192)?;
    let x = fire(&mut b, "fire7", &x, 48, 192)?;
    let x = fire(&mut b, "fire8", &x, 64, 256)?;
    let x = b.pool(&x, 3, 2, 0, true)?;
    let x = fire(&mut b, "fire9", &x, 64, 256)?;
    let x = b.conv2d("conv10", &x, Conv::new(1000, 1))?;
    b.finish(&x)
}

/// MobileNet v1, width multiplier 1.0, 224 x 224 (convolutions without bias, as they
/// are followed by batch normalisation).
///
/// # Errors
/// Never in practice.
pub fn mobilenet_v1() -> Result<Architecture> {
    let mut b = ArchBuilder::new("mobilenet_v1");
    let x = b.input(3, 224, 224)?;
    let mut x = b.conv2d("conv0", &x, Conv::new(32, 3).stride(2).padding(1).no_bias())?;
    let blocks: [(usize, usize); 13] = [
        (64, 1),
        (128, 2),
        (128, 1),
        (256, 2),
        (256, 1),
        (512, 2),
        (512, 1),
        (512, 1),
        (512, 1),
        (512, 1),
        (512, 1),
        (1024, 2),
        (1024, 1),
    ];
    for (i, (out, stride)) in blocks.iter().enumerate() {
        let dw = Conv::depthwise(3).stride(*stride).padding(1).no_bias();
        x = b.conv2d(&format!("conv{}.dw", i + 1), &x, dw)?;
        x = b.conv2d(
            &format!("conv{}.pw", i + 1),
            &x,
            Conv::new(*out, 1).no_bias(),
        )?;
    }
    let x = b.global_pool(&x);
    let x = b.linear("fc", &x, 1000, true)?;
    b.finish(&x)
}

/// VGG-16 (configuration D).
///
/// # Errors
/// Never in practice.
pub fn vgg16() -> Result<Architecture> {
    let mut b = ArchBuilder::new("vgg16");
    let mut x = b.input(3, 224, 224)?;
    let stages: [&[usize]; 5] = [
        &[64, 64],
        &[128, 128],
        &[256, 256, 256],
        &[512, 512, 512],
        &[512, 512, 512],
    ];
    for (s, convs) in stages.iter().enumerate() {
        for (i, &c) in convs.iter().enumerate() {
            x = b.conv2d(
                &format!("conv{}_{}", s + 1, i + 1),
                &x,
                Conv::new(c, 3).padding(1),
            )?;
        }
        x = b.pool(&x, 2, 2, 0, false)?;
    }
    let x = b.linear("fc6", &x, 4096, true)?;
    let x = b.linear("fc7", &x, 4096, true)?;
    let x = b.linear("fc8", &x, 1000, true)?;
    b.finish(&x)
}

/// ResNet-18 (basic blocks; 1x1 strided downsample convolutions write into the
/// stage's residual width, which all blocks of the stage share).
///
/// # Errors
/// Never in practice.
pub fn resnet18() -> Result<Architecture> {
    let mut b = ArchBuilder::new("resnet18");
    let x = b.input(3, 224, 224)?;
    let x = b.conv2d("conv1", &x, Conv::new(64, 7).stride(2).padding(3).no_bias())?;
    let mut x = b.pool(&x, 3, 2, 1, false)?;
    for (stage, &ch) in [64usize, 128, 256, 512].iter().enumerate() {
        let stride = if stage == 0 { 1 } else { 2 };
        let name = format!("layer{}", stage + 1);
        // The residual width of this stage: stage 1 reuses conv1's width.
        let (residual, shortcut) = if stride == 1 && x.channels == ch {
            (x.widths[0], x.clone())
        } else {
            let id = b.add_width(format!("{name}.residual"), ch, false);
            let sc = b.conv2d(
                &format!("{name}.0.downsample"),
                &x,
                Conv::new(ch, 1).stride(stride).no_bias().into_width(id),
            )?;
            (id, sc)
        };
        let mut block_in = x.clone();
        let mut sc = shortcut;
        for blk in 0..2 {
            let s = if blk == 0 { stride } else { 1 };
            let h = b.conv2d(
                &format!("{name}.{blk}.conv1"),
                &block_in,
                Conv::new(ch, 3).stride(s).padding(1).no_bias(),
            )?;
            let h = b.conv2d(
                &format!("{name}.{blk}.conv2"),
                &h,
                Conv::new(ch, 3).padding(1).no_bias().into_width(residual),
            )?;
            block_in = b.add(&h, &sc)?;
            sc = block_in.clone();
        }
        x = block_in;
    }
    let x = b.global_pool(&x);
    let x = b.linear("fc", &x, 1000, true)?;
    b.finish(&x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::relative_eq;

    fn close(got: f64, want: f64, rel: f64) -> bool {
        relative_eq!(got, want, epsilon = 0.0, max_relative = rel)
    }

    #[test]
    fn lenet5_counts() {
        let a = lenet5().unwrap();
        assert_eq!(a.weight_count(), 61_470);
        assert_eq!(a.param_count(), 61_706);
        assert_eq!(a.macs(), 117_600 + 240_000 + 48_000 + 10_080 + 840);
    }

    #[test]
    fn alexnet_matches_torchvision() {
        let a = alexnet().unwrap();
        assert_eq!(a.param_count(), 61_100_840);
        assert!(close(a.macs() as f64, 0.714e9, 0.01), "{}", a.macs());
        assert_eq!(a.layers()[5].in_features(), 9216);
    }

    #[test]
    fn squeezenet_matches_torchvision() {
        let a = squeezenet1_0().unwrap();
        assert_eq!(a.param_count(), 1_248_424);
        // 0.82 GFLOPS in torchvision's table counts MACs.
        assert!(close(a.macs() as f64, 0.82e9, 0.02), "{}", a.macs());
        let conv10 = a.layer(a.layer_index("conv10").unwrap()).unwrap();
        match conv10.kind {
            crate::arch::LayerKind::Conv2d(g) => assert_eq!((g.in_channels, g.in_h), (512, 13)),
            _ => unreachable!(),
        }
        // fire2.squeeze reads the 54x54 map after the ceil-mode pool.
        match a.layers()[1].kind {
            crate::arch::LayerKind::Conv2d(g) => assert_eq!(g.in_h, 54),
            _ => unreachable!(),
        }
    }

    #[test]
    fn mobilenet_matches_paper() {
        let a = mobilenet_v1().unwrap();
        // 4.2 M in the paper includes batch-norm parameters (~0.02 M).
        assert!(
            close(a.param_count() as f64, 4.2e6, 0.01),
            "{}",
            a.param_count()
        );
        assert!(close(a.macs() as f64, 569e6, 0.01), "{}", a.macs());
    }

    #[test]
    fn vgg16_matches_torchvision() {
        let a = vgg16().unwrap();
        assert_eq!(a.param_count(), 138_357_544);
        assert!(close(a.macs() as f64, 15.5e9, 0.01), "{}", a.macs());
    }

    #[test]
    fn resnet18_matches_torchvision() {
        let a = resnet18().unwrap();
        // torchvision: 11 689 512 parameters including 9 600 batch-norm parameters.
        assert_eq!(a.param_count(), 11_689_512 - 9_600);
        assert!(close(a.macs() as f64, 1.82e9, 0.01), "{}", a.macs());
        // Residual widths are shared: layer2.residual is written by 3 layers.
        let id = a.layers()[a.layer_index("layer2.0.downsample").unwrap()].output;
        let writers = a.layers().iter().filter(|l| l.output == id).count();
        assert_eq!(writers, 3);
    }

    #[test]
    fn unknown_name_is_an_error() {
        let err = by_name("lenet6").unwrap_err().to_string();
        assert!(err.contains("choose one of"), "{err}");
        for n in NAMES {
            assert!(by_name(n).is_ok());
        }
    }
}

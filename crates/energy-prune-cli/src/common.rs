//! Argument checks and parsers of the command line that clap cannot do alone.

/// `q25` (0.25-quantile), `min`, `median` or `trim20` (20 % trimmed mean).
pub fn parse_statistic(s: &str) -> Result<energy_prune::energy::Statistic, String> {
    use energy_prune::energy::Statistic;
    match s {
        "q25" => Ok(Statistic::Quantile(0.25)),
        "q10" => Ok(Statistic::Quantile(0.10)),
        "min" => Ok(Statistic::Min),
        "median" => Ok(Statistic::Median),
        "trim20" => Ok(Statistic::TrimmedMean(0.2)),
        other => Err(format!("{other}: expected q25, q10, min, median or trim20")),
    }
}

/// Argument checks that run before any long work (so a bad flag fails in
/// milliseconds, not after training); their errors exit with code 2.
pub mod check {
    use std::path::Path;

    use crate::args::Usage;

    /// The MNIST IDX files a data directory holds.
    const MNIST: [&str; 4] = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ];

    type R<T> = Result<T, Usage>;

    fn fail(msg: String) -> Usage {
        Usage(msg)
    }

    /// A budget as a fraction of the dense cost: finite, in (0, 1].
    pub fn fraction(flag: &str, v: f64) -> R<f64> {
        if v > 0.0 && v <= 1.0 {
            Ok(v)
        } else {
            Err(fail(format!(
                "{flag} {v}: must be a fraction of the dense cost in (0, 1]"
            )))
        }
    }

    /// Every value a fraction in (0, 1].
    pub fn fractions(flag: &str, v: &[f64]) -> R<()> {
        v.iter().try_for_each(|x| fraction(flag, *x).map(|_| ()))
    }

    /// A finite value > 0 (learning rates, weights of loss terms).
    pub fn positive(flag: &str, v: f64) -> R<f64> {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(fail(format!("{flag} {v}: must be finite and > 0")))
        }
    }

    /// A finite value in `[lo, hi]`.
    pub fn within(flag: &str, v: f64, lo: f64, hi: f64) -> R<f64> {
        if v >= lo && v <= hi {
            Ok(v)
        } else {
            Err(fail(format!("{flag} {v}: must be in [{lo}, {hi}]")))
        }
    }

    /// The largest value a count flag accepts: enough for any real run, small
    /// enough that a typo cannot start a job that runs until killed or fills the
    /// disk.
    pub fn limit_of(flag: &str) -> usize {
        match flag {
            f if f.ends_with("epochs") => 10_000,
            "--seeds" => 1_000,
            "--samples" => 100_000,
            "--loop-rounds" | "--mask-rounds" => 100,
            "--batch" | "--batch-size" => 65_536,
            "--repeats" => 10_000,
            "--shards" => 1_000_000,
            "--grid" => 1_000,
            _ => 100_000_000,
        }
    }

    /// An integer in `[lo, limit_of(flag)]`.
    pub fn count(flag: &str, v: usize, lo: usize) -> R<usize> {
        let hi = limit_of(flag);
        if v < lo {
            Err(fail(format!("{flag} {v}: must be >= {lo}")))
        } else if v > hi {
            Err(fail(format!("{flag} {v}: must be at most {hi}")))
        } else {
            Ok(v)
        }
    }

    /// An integer in `[1, limit_of(flag)]`.
    pub fn at_least_one(flag: &str, v: usize) -> R<usize> {
        count(flag, v, 1)
    }

    /// A file that exists and can be opened.
    pub fn readable(flag: &str, path: &Path) -> R<()> {
        let meta = std::fs::metadata(path)
            .map_err(|e| fail(format!("{flag} {}: cannot be read ({e})", path.display())))?;
        if !meta.is_file() {
            return Err(fail(format!(
                "{flag} {}: not a regular file (a directory or a device); give a file",
                path.display()
            )));
        }
        std::fs::File::open(path)
            .map(|_| ())
            .map_err(|e| fail(format!("{flag} {}: cannot be read ({e})", path.display())))
    }

    /// A directory holding the four MNIST IDX files.
    pub fn mnist_dir(flag: &str, dir: &Path) -> R<()> {
        for f in MNIST {
            if !dir.join(f).is_file() {
                return Err(fail(format!(
                    "{flag} {}: no {f} there (expects the four MNIST IDX .gz files)",
                    dir.display()
                )));
            }
        }
        Ok(())
    }

    /// An output path that is none of the inputs (so a run never overwrites what it
    /// reads).
    pub fn distinct(flag: &str, out: &Path, inputs: &[&Path]) -> R<()> {
        // A path that does not exist yet is its folder's canonical path joined with
        // its name, so that `dir/../x` and `x` compare equal.
        let canon = |p: &Path| {
            std::fs::canonicalize(p).unwrap_or_else(|_| {
                let dir = match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                let name = p.file_name().map(Path::new).unwrap_or(p);
                std::fs::canonicalize(dir).map_or_else(|_| p.to_path_buf(), |d| d.join(name))
            })
        };
        let o = canon(out);
        if inputs.iter().any(|i| canon(i) == o) {
            return Err(fail(format!(
                "{flag} {}: is also an input; write to another file",
                out.display()
            )));
        }
        Ok(())
    }

    /// A path a file can be written to: its directory exists and accepts a file.
    /// (A probe file next to it is created and removed; an existing file is untouched.)
    pub fn writable(flag: &str, path: &Path) -> R<()> {
        if path.is_dir() {
            return Err(fail(format!(
                "{flag} {}: is a directory; give a file name",
                path.display()
            )));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(fail(format!(
                "{flag} {}: its folder {} does not exist",
                path.display(),
                dir.display()
            )));
        }
        // A probe of a fresh, unique name: never an existing file.
        let probe = dir.join(format!(
            ".energy-prune-write-probe-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| {
                fail(format!(
                    "{flag} {}: cannot be written ({e})",
                    path.display()
                ))
            })
    }

    /// Every output path differs from every input and from the other outputs, so a
    /// run never overwrites what it reads or writes one file twice.
    pub fn outputs_apart(outputs: &[(&str, &Path)], inputs: &[&Path]) -> R<()> {
        for (i, (flag, out)) in outputs.iter().enumerate() {
            distinct(flag, out, inputs)?;
            let others: Vec<&Path> = outputs[..i].iter().map(|(_, p)| *p).collect();
            if !others.is_empty() {
                distinct(flag, out, &others).map_err(|_| {
                    fail(format!(
                        "{flag} {}: is also another output; give each output its own file",
                        out.display()
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// The four MNIST files of `dir` (inputs that no output may replace).
    pub fn mnist_files(dir: &Path) -> Vec<std::path::PathBuf> {
        MNIST.iter().map(|f| dir.join(f)).collect()
    }
}

/// Whether `a` and `b` name the same file (through links and `..`, where the
/// files exist).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    let canonical = |p: &std::path::Path| {
        p.canonicalize().ok().or_else(|| {
            let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
            let dir = dir
                .unwrap_or(std::path::Path::new("."))
                .canonicalize()
                .ok()?;
            Some(dir.join(p.file_name()?))
        })
    };
    a == b || matches!((canonical(a), canonical(b)), (Some(x), Some(y)) if x == y)
}

/// Refuse outputs that would overwrite a side file the input model was read
/// from (ONNX external data), before any work.
pub fn refuse_side_files(
    outputs: &[(&str, &std::path::Path)],
    side_files: &[std::path::PathBuf],
) -> energy_prune::Result<()> {
    for (flag, out) in outputs {
        let data = energy_prune_onnx::ExternalData::beside(out);
        let own_side = out.with_file_name(&data.location);
        for f in side_files {
            if same_file(out, f) || same_file(&own_side, f) {
                return Err(energy_prune::Error::param(
                    "output file",
                    out.display(),
                    format!(
                        "{flag} would overwrite {}, a side file the input model's weights are \
                         read from; write the output under another name or directory",
                        f.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Write `model` to `out`: with its tensors in the side file `OUT.data` when
/// `external` is asked for or the model was read from external data (a model of
/// that size may not fit one file), else in one file. Says where the weights
/// went. Callers check `out` with [`refuse_side_files`] right after loading, before
/// any work.
pub fn save_onnx(
    model: &energy_prune_onnx::OnnxModel,
    out: &std::path::Path,
    external: bool,
    input_side_files: &[std::path::PathBuf],
) -> energy_prune::Result<()> {
    if !external && input_side_files.is_empty() {
        return model.save(out);
    }
    let ext = energy_prune_onnx::ExternalData::beside(out);
    model.save_with_external_data(out, &ext)?;
    println!(
        "tensors of 1 KiB and more written to {} (ONNX external data)",
        out.with_file_name(&ext.location).display()
    );
    Ok(())
}

/// `CxHxW` (e.g. `3x224x224`) as `[C, H, W]`.
pub fn parse_chw(s: &str) -> Result<[usize; 3], String> {
    let parts: Vec<usize> = s
        .split('x')
        .map(|v| v.parse::<usize>().ok().filter(|&v| v > 0))
        .collect::<Option<_>>()
        .unwrap_or_default();
    <[usize; 3]>::try_from(parts)
        .map_err(|_| format!("{s}: expected CxHxW with whole numbers >= 1, e.g. 3x224x224"))
}

#[cfg(test)]
mod tests {
    use super::check;
    use std::path::Path;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ep-check-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn writable_refuses_directories_and_missing_folders_and_keeps_other_files() {
        let d = scratch("w");
        let e = check::writable("--out", &d).unwrap_err();
        assert!(e.0.contains("is a directory"), "{e}");
        let e = check::writable("--out", &d.join("no/such/x.json")).unwrap_err();
        assert!(e.0.contains("does not exist"), "{e}");
        // A file named like the old probe is not touched.
        let neighbour = d.join("m.write-probe");
        std::fs::write(&neighbour, b"keep").unwrap();
        check::writable("--out", &d.join("m.json")).unwrap();
        assert_eq!(std::fs::read(&neighbour).unwrap(), b"keep");
        // The probe itself is gone.
        let left: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn readable_wants_a_regular_file() {
        let d = scratch("r");
        assert!(
            check::readable("--onnx", &d)
                .unwrap_err()
                .0
                .contains("not a regular file")
        );
        assert!(check::readable("--onnx", Path::new("/dev/zero")).is_err());
        let f = d.join("a.onnx");
        std::fs::write(&f, b"x").unwrap();
        check::readable("--onnx", &f).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn outputs_differ_from_inputs_and_from_each_other() {
        let d = scratch("o");
        let input = d.join("in.onnx");
        std::fs::write(&input, b"x").unwrap();
        let out = d.join("out.onnx");
        let same_by_another_name = d.join("sub/../in.onnx");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        let e =
            check::outputs_apart(&[("OUT.onnx", &same_by_another_name)], &[&input]).unwrap_err();
        assert!(e.0.contains("is also an input"), "{e}");
        let e =
            check::outputs_apart(&[("OUT.onnx", &out), ("--plan", &out)], &[&input]).unwrap_err();
        assert!(e.0.contains("another output"), "{e}");
        check::outputs_apart(
            &[("OUT.onnx", &out), ("--plan", &d.join("p.json"))],
            &[&input],
        )
        .unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }
}

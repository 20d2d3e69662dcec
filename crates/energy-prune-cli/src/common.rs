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

    /// An integer >= 1.
    pub fn at_least_one(flag: &str, v: usize) -> R<usize> {
        if v >= 1 {
            Ok(v)
        } else {
            Err(fail(format!("{flag} {v}: must be >= 1")))
        }
    }

    /// A file that exists and can be opened.
    pub fn readable(flag: &str, path: &Path) -> R<()> {
        std::fs::File::open(path)
            .map(|_| ())
            .map_err(|e| fail(format!("{flag} {}: cannot be read ({e})", path.display())))
    }

    /// A directory holding the four MNIST IDX files.
    pub fn mnist_dir(flag: &str, dir: &Path) -> R<()> {
        for f in [
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ] {
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
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
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
        let probe = path.with_extension("write-probe");
        std::fs::write(&probe, b"")
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| {
                fail(format!(
                    "{flag} {}: cannot be written ({e})",
                    path.display()
                ))
            })
    }
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

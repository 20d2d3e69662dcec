//! Shared command-line plumbing of the examples.

/// Parse the arguments and run, turning errors into a message and an exit code
/// (2 for bad arguments, 1 for a failed run).
pub fn run_main<A>(
    parse: fn() -> Result<A, lexopt::Error>,
    run: fn(&A) -> energy_prune::Result<()>,
) {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e} (see --help)");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

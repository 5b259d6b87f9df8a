//! The `sidestream` command line, for the multi-process tests of this package.

fn main() -> std::process::ExitCode {
    sidestream_sidecar::cli::main()
}

//! The `sidestream` binary: the sidecar daemon and the command-line tools.

fn main() -> std::process::ExitCode {
    sidestream_sidecar::cli::main()
}

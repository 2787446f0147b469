//! The `levee` binary, rebuilt inside the test package so tests can run it as a process.

fn main() -> std::process::ExitCode {
    levee::cli::main()
}

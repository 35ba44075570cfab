//! The `ferry` binary: parse the command line and run it (`node::cli`).

fn main() -> std::process::ExitCode {
    node::cli::main()
}

//! `patient`: see the crate documentation of [`patient`] for what it does and guarantees.

fn main() -> std::process::ExitCode {
    patient::main(std::env::args_os())
}

//! `medicine`: see the crate documentation of [`medicine`] for what it does and guarantees.

fn main() -> std::process::ExitCode {
    medicine::main(std::env::args_os())
}

//! `medicine-pubsub-local`: the whole system on one machine. See the crate documentation of [`local`].
//!
//! The binary is multi-call: `medicine-pubsub-local patient …` and `medicine-pubsub-local medicine …` run the
//! `patient` and `medicine` programs themselves (the same `main` as their own binaries). The local mode starts
//! its children that way, so `cargo run --bin medicine-pubsub-local` needs no other binary built.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some(program @ ("patient" | "medicine")) => {
            let program = program.to_owned();
            local::children::exit_with_parent();
            // The child's own program name first, then its arguments.
            args.remove(0);
            if program == "patient" {
                patient::main(args)
            } else {
                medicine::main(args)
            }
        }
        _ => local::main(args),
    }
}

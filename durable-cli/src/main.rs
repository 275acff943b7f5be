//! The `durable` binary: everything is in the library, see the crate docs of `durable_cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    durable_cli::run()
}

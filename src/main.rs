//! The `vault` binary: parse arguments, run the command, map the outcome to an exit status.
#![forbid(unsafe_code)]

mod cli;
mod ui;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: the error and its causes, no backtrace, no secrets.
            eprintln!("vault: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

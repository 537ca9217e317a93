//! The `vault` binary: parse arguments, run the command, map the outcome to an exit status.
// Denied, not forbidden: src/alloc.rs alone allows it, to set one allocator option.
#![deny(unsafe_code)]

mod alloc;
mod cli;
mod ui;

use std::process::ExitCode;

use clap::Parser;

/// Exit status after Ctrl-C, as shells report it.
const EXIT_INTERRUPTED: u8 = 130;

/// Keys live in this process's memory: no core dump may carry them to disk, and other processes
/// of the same user may not attach to read them.
fn harden_process() {
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    );
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
}

/// A reader that went away (`vault snapshots | head`) is not an error: `println!` panics on a
/// closed pipe, and this ends the process quietly instead, as the default SIGPIPE would.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// With `--json`, a failed command still prints one JSON object on standard output, so that a
/// script can tell an error from a crash: `{"error": {"message": ..., "exit_code": ...}}`.
fn json_error(message: &str, code: u8) {
    let v = serde_json::json!({ "error": { "message": message, "exit_code": code } });
    println!("{v}");
}

/// Whether `--json` was asked for, from the raw arguments (when they did not parse).
fn json_in_args() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

fn main() -> ExitCode {
    alloc::tune();
    harden_process();
    quiet_on_closed_pipe();
    // Before any thread starts: no child process may inherit the passphrase or cloud keys.
    vault::envsecrets::take_from_environment();
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = e.exit_code();
            if code != 0 && json_in_args() {
                // clap's first paragraph ("the following required arguments were not
                // provided: --target <DIR>"), without the usage lines after it.
                let text = e.render().to_string();
                let first: Vec<&str> = text
                    .lines()
                    .take_while(|l| !l.trim().is_empty())
                    .map(str::trim)
                    .collect();
                let message = first.join(" ");
                json_error(message.trim_start_matches("error: "), code as u8);
            }
            e.exit()
        }
    };
    let json = args.json;
    let _ = ctrlc::set_handler(|| {
        if vault::interrupt::requested() {
            // Second Ctrl-C: the user insists. Everything written so far is consistent.
            std::process::exit(EXIT_INTERRUPTED as i32);
        }
        vault::interrupt::request();
        eprintln!(
            "\ninterrupting: finishing the current step (press Ctrl-C again to quit at once)"
        );
    });
    let (message, code) = match cli::run(args) {
        Ok(code) => return ExitCode::from(code),
        Err(e)
            if matches!(
                e.downcast_ref::<vault::Error>(),
                Some(vault::Error::Interrupted)
            ) =>
        {
            eprintln!("vault: interrupted; nothing already stored was lost, and running the command again continues");
            ("interrupted".to_string(), EXIT_INTERRUPTED)
        }
        Err(e) => {
            // One line: the error and its causes, no backtrace, no secrets.
            let message = ui::safe_lines(&format!("{e:#}")).into_owned();
            eprintln!("vault: error: {message}");
            let code: u8 = if e.downcast_ref::<cli::UsageError>().is_some() {
                cli::EXIT_USAGE
            } else {
                1
            };
            (message, code)
        }
    };
    if json {
        json_error(&message, code);
    }
    ExitCode::from(code)
}

//! The `vault` binary: parse arguments, run the command, map the outcome to an exit status.
#![forbid(unsafe_code)]

mod cli;
mod ui;

use std::process::ExitCode;

/// mimalloc instead of glibc malloc: with glibc, the multi-megabyte pack buffers that backup
/// threads allocate and free raise the dynamic mmap threshold, after which they come from
/// per-thread heaps that never shrink; peak memory then grows with the length of the run.
/// Built without transparent huge pages (Cargo.toml): on machines where THP is `madvise`, the
/// arenas mimalloc 3 advises for them are faulted in 2 MiB at a time, for buffers of 64 KiB
/// to 4 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn main() -> ExitCode {
    harden_process();
    quiet_on_closed_pipe();
    // Before any thread starts: no child process may inherit the passphrase or cloud keys.
    vault::envsecrets::take_from_environment();
    let args = cli::Cli::parse();
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
    match cli::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e)
            if matches!(
                e.downcast_ref::<vault::Error>(),
                Some(vault::Error::Interrupted)
            ) =>
        {
            eprintln!("vault: interrupted; nothing already stored was lost, and running the command again continues");
            ExitCode::from(EXIT_INTERRUPTED)
        }
        Err(e) => {
            // One line: the error and its causes, no backtrace, no secrets.
            eprintln!("vault: error: {}", ui::safe_lines(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

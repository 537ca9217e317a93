//! What a command shows, and where: one place for the `--quiet` / `--json` / terminal-progress
//! policy and the exit status. Commands say what happened; this module decides whether and how
//! it is printed.

use std::fmt::Display;
use std::io::Write;
use std::sync::Arc;

use anyhow::Result;
use serde::Serialize;
use vault::progress::Progress;

use crate::ui;

/// Finished, but some files were skipped or not restored.
pub const EXIT_PARTIAL: u8 = 3;

/// How a streamed result is written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// A JSON array, item by item.
    Json,
    /// Lines for the terminal.
    Text,
    /// Nothing (--quiet), though the items are still produced and their errors reported.
    Silent,
}

/// How a command's outcome is shown.
#[derive(Clone, Copy)]
pub struct Output {
    json: bool,
    quiet: bool,
}

impl Output {
    pub fn new(json: bool, quiet: bool) -> Self {
        Output { json, quiet }
    }

    /// How a result printed as it is produced (a long listing) is written.
    pub fn stream(&self) -> Stream {
        if self.json {
            Stream::Json
        } else if self.quiet {
            Stream::Silent
        } else {
            Stream::Text
        }
    }

    /// The result of a command: as JSON on standard output with --json; else `human` prints it,
    /// unless --quiet.
    pub fn result<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        if self.json {
            json(value)
        } else if !self.quiet {
            human()
        } else {
            Ok(())
        }
    }

    /// JSON of a command that prints its text as it goes: only with --json.
    pub fn json<T: Serialize>(&self, value: &T) -> Result<()> {
        if self.json {
            json(value)?;
        }
        Ok(())
    }

    /// A line of the human report on standard output: not with --json or --quiet.
    pub fn say(&self, line: impl Display) {
        if !self.json && !self.quiet {
            println!("{}", human(line));
        }
    }

    /// A line on standard output for commands whose result has no JSON form: not with --quiet.
    pub fn tell(&self, line: impl Display) {
        if !self.quiet {
            println!("{}", human(line));
        }
    }

    /// Information on standard error (what is being done, a caution): not with --quiet.
    pub fn notice(&self, line: impl Display) {
        if !self.quiet {
            eprintln!("{}", human(line));
        }
    }

    /// Information on standard error for the terminal only: not with --json or --quiet.
    pub fn progress_note(&self, line: impl Display) {
        if !self.json && !self.quiet {
            eprintln!("{}", human(line));
        }
    }

    /// A warning or a per-item problem on standard error: always shown.
    pub fn warn(&self, line: impl Display) {
        eprintln!("{}", human(line));
    }

    /// A progress display for `verb`, drawn only on a terminal and without --json or --quiet.
    pub fn progress(&self, progress: Arc<Progress>, verb: &'static str) -> ui::ProgressView {
        self.progress_if(progress, verb, true)
    }

    /// [`Self::progress`] when `wanted` (a step that is quick without it, as `check` without
    /// --read-data).
    pub fn progress_if(
        &self,
        progress: Arc<Progress>,
        verb: &'static str,
        wanted: bool,
    ) -> ui::ProgressView {
        ui::ProgressView::start(progress, verb, wanted && self.progress_shown())
    }

    /// Whether a progress display would be drawn (counting totals first is worth it then).
    pub fn progress_shown(&self) -> bool {
        ui::ProgressView::shown(!self.quiet && !self.json)
    }
}

fn json<T: Serialize>(v: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// The exit status of a run that may have passed over items: 1 when some failed, 3 when some
/// were skipped, else 0.
pub fn status(failed: bool, skipped: bool) -> u8 {
    if failed {
        1
    } else if skipped {
        EXIT_PARTIAL
    } else {
        0
    }
}

/// Every human line passes here: whatever name it carries cannot drive the terminal (names are
/// also escaped where they are formatted, line feeds included; this keeps vault's own).
fn human(line: impl Display) -> String {
    ui::safe_lines(&line.to_string()).into_owned()
}

//! Terminal presentation: progress bars on a terminal, human-readable sizes and times, and the
//! passphrase prompt.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use vault::crypto::Passphrase;
use vault::progress::Progress;

/// A name (or any text from a snapshot or the filesystem) made safe to print on a terminal:
/// control characters and bidirectional overrides are written as escapes, so that a file name
/// cannot move the cursor, recolour the screen or fake a line of output. `--json` output is not
/// passed through this: JSON escapes them itself, losing nothing.
pub fn safe(s: &str) -> std::borrow::Cow<'_, str> {
    escape(s, false)
}

/// [`safe`] for a whole message of vault's own, which may span lines: line feeds are kept.
pub fn safe_lines(s: &str) -> std::borrow::Cow<'_, str> {
    escape(s, true)
}

fn unsafe_char(c: char, keep_lf: bool) -> bool {
    (c.is_control() && !(keep_lf && c == '\n'))
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape(s: &str, keep_lf: bool) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| unsafe_char(c, keep_lf)) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' if !keep_lf => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c, keep_lf) && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if unsafe_char(c, keep_lf) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Human-readable byte count.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// UTC time as `YYYY-MM-DD HH:MM:SS`.
/// A time in this computer's time zone (`TZ`, else the system's), as listings show it to
/// people; `--json` keeps seconds since the epoch, UTC.
pub fn local_time(secs: i64) -> String {
    local_time_in(secs, &jiff::tz::TimeZone::system())
}

fn local_time_in(secs: i64, tz: &jiff::tz::TimeZone) -> String {
    match jiff::Timestamp::from_second(secs) {
        Ok(t) => t
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => time(secs),
    }
}

/// A time in UTC, for files and logs that other computers read.
pub fn time(secs: i64) -> String {
    let (y, m, d) = vault::civil::civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A progress display fed from shared counters; draws only when stderr is a terminal.
pub struct ProgressView {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ProgressView {
    /// True when a progress display would be shown (enabled, and stderr is a terminal).
    pub fn shown(enabled: bool) -> bool {
        enabled && std::io::stderr().is_terminal()
    }

    pub fn start(progress: Arc<Progress>, verb: &'static str, enabled: bool) -> ProgressView {
        let stop = Arc::new(AtomicBool::new(false));
        if !Self::shown(enabled) {
            return ProgressView { stop, handle: None };
        }
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let bar = ProgressBar::new(0);
            let counting = ProgressStyle::with_template("{prefix}: {spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            let working = ProgressStyle::with_template(
                "{prefix} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            // (stage, whether the bar is drawn): a change restarts the rate and the ETA.
            let mut shown: Option<(Option<String>, bool)> = None;
            while !stop2.load(Ordering::Relaxed) {
                let s = progress.state();
                // Nothing to measure yet: a bar would show full, at 0 B/0 B.
                let bar_drawn = !(s.counting && s.bytes_total == 0);
                let now = (s.stage.clone(), bar_drawn);
                bar.set_length(s.bytes_total.max(s.bytes_done));
                bar.set_position(s.bytes_done);
                if shown.as_ref() != Some(&now) {
                    // Length and position first: a style drawn before them shows 0 B/0 B, and
                    // the jump to where the stage is would count as speed.
                    bar.set_style(if bar_drawn {
                        working.clone()
                    } else {
                        counting.clone()
                    });
                    bar.set_prefix(s.stage.clone().unwrap_or_else(|| verb.to_string()));
                    bar.reset_eta();
                    bar.reset_elapsed();
                    shown = Some(now);
                }
                let more = if s.counting { "+" } else { "" };
                let unchanged = if s.unchanged_files > 0 {
                    format!(", {} unchanged", s.unchanged_files)
                } else {
                    String::new()
                };
                bar.set_message(if bar_drawn {
                    format!("{}/{}{more} files{unchanged}", s.files_done, s.files_total)
                } else if s.files_total > 0 {
                    format!("counting files: {}{unchanged}", s.files_total)
                } else {
                    String::new()
                });
                bar.tick();
                std::thread::sleep(Duration::from_millis(150));
            }
            bar.finish_and_clear();
        });
        ProgressView {
            stop,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for ProgressView {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Where the passphrase comes from, in order: VAULT_PASSWORD, the password file, a prompt on the
/// terminal. `confirm` asks twice (new repositories).
pub fn passphrase(password_file: Option<&Path>, prompt: &str, confirm: bool) -> Result<Passphrase> {
    // A file named for this run (or for this repository in its settings) is more specific than
    // the environment: it wins, and one that cannot be read is an error, not ignored.
    if let Some(f) = password_file {
        let mut s = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the password file {}", f.display()))?;
        if s.ends_with('\n') {
            s.pop();
            if s.ends_with('\r') {
                s.pop();
            }
        }
        return Ok(Passphrase::new(s));
    }
    if let Some(p) = vault::envsecrets::password() {
        return Ok(Passphrase::new(p.to_string()));
    }
    if std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password(prompt).context("cannot read the passphrase")?;
        if confirm {
            let again = rpassword::prompt_password("Repeat the passphrase: ")
                .context("cannot read the passphrase")?;
            if again != p {
                bail!("the two passphrases differ; nothing was created");
            }
        }
        return Ok(Passphrase::new(p));
    }
    Err(vault::Error::NoPassphrase.into())
}

/// Warn, as ssh does, when a file holding a secret is readable by others.
fn warn_if_open(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: {} is readable by other users; run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
}

/// Read an age identity file (age-keygen output, or a saved recovery key).
pub fn identity_file(path: &Path) -> Result<vault::crypto::Identities> {
    warn_if_open(path);
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the identity file {}", path.display()))?,
    );
    Ok(vault::crypto::Identities::parse(&text)?)
}

/// The recipients of the identities in an identity file (plugin ones through their plugin), and
/// whether any is a plugin identity.
pub fn recipients_of_identity_file(path: &Path) -> Result<(vault::crypto::KeyRecipients, bool)> {
    warn_if_open(path);
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the identity file {}", path.display()))?,
    );
    Ok(vault::crypto::KeyRecipients::of_identity_file(&text)?)
}

/// Ask for an identity (a pasted recovery key) on the terminal.
pub fn prompt_identity(prompt: &str) -> Result<vault::crypto::Identities> {
    if !std::io::stdin().is_terminal() {
        bail!("give the recovery key with --identity FILE (no terminal to ask on)");
    }
    let k =
        zeroize::Zeroizing::new(rpassword::prompt_password(prompt).context("cannot read the key")?);
    Ok(vault::crypto::Identities::parse(&k)?)
}

/// A new passphrase: VAULT_NEW_PASSWORD, or asked twice on the terminal.
pub fn new_passphrase() -> Result<Passphrase> {
    if let Ok(p) = std::env::var("VAULT_NEW_PASSWORD") {
        return Ok(Passphrase::new(p));
    }
    if !std::io::stdin().is_terminal() {
        bail!("set VAULT_NEW_PASSWORD or run on a terminal to choose the new passphrase");
    }
    let p = rpassword::prompt_password("New passphrase: ").context("cannot read the passphrase")?;
    let again = rpassword::prompt_password("Repeat the new passphrase: ")
        .context("cannot read the passphrase")?;
    if p != again {
        bail!("the two passphrases differ; nothing was changed");
    }
    Ok(Passphrase::new(p))
}

/// Whether [`passphrase`] would ask on the terminal (no file, no environment variable).
pub fn prompts_for_passphrase(password_file: Option<&Path>) -> bool {
    password_file.is_none()
        && vault::envsecrets::password().is_none()
        && std::io::stdin().is_terminal()
}

/// Passphrases shorter than this get a warning when they are set.
pub const SHORT_PASSPHRASE: usize = 10;

/// Warn about a new passphrase that is short: whoever copies the repository can try
/// passphrases offline, as fast as their hardware allows.
pub fn warn_if_short(p: &Passphrase) {
    let n = p.char_count();
    if n < SHORT_PASSPHRASE {
        eprintln!(
            "warning: this passphrase is {n} character{} long. Anyone who gets a copy of the \
             repository can try passphrases offline; use at least {SHORT_PASSPHRASE} characters, \
             better four or more random words. `vault key add --passphrase` adds a new one and \
             `vault key remove` removes this one.",
            if n == 1 { "" } else { "s" }
        );
    }
}

/// Fail early, with the reason, when [`write_secret_file`] could not create `path`: it exists
/// (a key file is never replaced), or its folder does not.
pub fn check_new_secret_file(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok() {
        bail!(
            "{} already exists: give a new file for the key (vault never replaces one)",
            path.display()
        );
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        bail!(
            "cannot create {}: no folder {}",
            path.display(),
            parent.display()
        );
    }
    Ok(())
}

/// Create a file readable only by its owner (refusing to replace an existing one).
pub fn write_secret_file(path: &Path, content: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(content.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(time(0), "1970-01-01 00:00:00");
        let kolkata = jiff::tz::TimeZone::fixed(jiff::tz::offset(5));
        assert_eq!(local_time_in(0, &kolkata), "1970-01-01 05:00:00");
        assert_eq!(
            local_time_in(0, &jiff::tz::TimeZone::UTC),
            "1970-01-01 00:00:00"
        );
        assert_eq!(time(1_795_651_200), "2026-11-26 00:00:00");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
    }

    #[test]
    fn names_cannot_drive_the_terminal() {
        assert_eq!(safe("IMG_0001.JPG"), "IMG_0001.JPG");
        assert_eq!(safe("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(safe("x\rdone\n"), "x\\rdone\\n");
        assert_eq!(safe("\u{202e}gpj.exe"), "\\u{202e}gpj.exe");
        assert_eq!(safe("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(safe_lines("one\ntwo\x07"), "one\ntwo\\x07");
    }
}

//! Command-line interface: the global options, the registry of commands (one file each under
//! `cli/`, an `Args` struct and a `run`), and the dispatch. This is the edge of the program:
//! errors become `anyhow` here and exit codes in main.rs; what is printed and how is
//! `output`'s, how a repository is opened `repos`'.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod backup;
mod check;
mod copy;
mod forget;
mod init;
mod key;
mod ls;
mod mv;
mod output;
mod prune;
mod repair;
mod repo;
mod repos;
mod restore;
mod snapshots;
mod stats;

pub(crate) use output::Output;
pub(crate) use repos::{Ctx, Target};

#[derive(Parser)]
#[command(
    name = "vault",
    version,
    about = "Encrypted, deduplicated backups of photos and videos",
    long_about = "Encrypted, deduplicated backups of photos and videos.\n\n\
        Files are split into chunks, compressed when that helps, encrypted on this device with age \
        and packed into a repository: a local folder, an external drive or an S3-compatible \
        bucket (s3://bucket/prefix). Without --repo or VAULT_REPO, the repository is \
        ~/.local/share/vault/repo; `vault repo add` names repositories.\n\n\
        The passphrase is read from --password-file / VAULT_PASSWORD_FILE, from VAULT_PASSWORD, \
        or asked for on the terminal.\n\n\
        Exit status: 0 success, 1 error, 2 usage error, 3 finished but some files were skipped, \
        130 interrupted (running the same command again continues)."
)]
pub struct Cli {
    /// Repository: a folder path, s3://bucket/prefix or a name from `vault repo list`
    /// (default: ~/.local/share/vault/repo)
    #[arg(short, long, env = "VAULT_REPO", global = true, value_name = "REPO")]
    pub(crate) repo: Option<String>,
    /// Read the passphrase from this file
    #[arg(long, env = "VAULT_PASSWORD_FILE", global = true, value_name = "FILE")]
    pub(crate) password_file: Option<PathBuf>,
    /// Unlock with an age identity file (age-keygen output, or a saved recovery key) instead of
    /// the passphrase
    #[arg(long, env = "VAULT_IDENTITY_FILE", global = true, value_name = "FILE")]
    pub(crate) identity: Option<PathBuf>,
    /// Where device keys are kept: the platform store (Secret Service, Keychain, Credential
    /// Manager), the Linux kernel keyutils store, or none
    #[arg(
        long,
        env = "VAULT_KEYRING",
        global = true,
        value_enum,
        default_value = "platform"
    )]
    pub(crate) keyring: KeyringArg,
    /// Use a write-only device profile (from `vault key add --write-only`): back up, never read
    #[arg(
        long,
        env = "VAULT_PROFILE_FILE",
        global = true,
        value_name = "FILE",
        conflicts_with = "identity"
    )]
    pub(crate) profile: Option<PathBuf>,
    /// Print machine-readable JSON on standard output
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Print nothing but errors
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
    /// S3 endpoint URL for non-AWS services (MinIO, Garage, SeaweedFS, B2, R2, Wasabi, ...)
    #[arg(long, env = "AWS_ENDPOINT_URL", global = true, value_name = "URL")]
    pub(crate) s3_endpoint: Option<String>,
    /// S3 region (default: from the AWS profile, else us-east-1)
    #[arg(long, env = "AWS_REGION", global = true, value_name = "REGION")]
    pub(crate) s3_region: Option<String>,
    /// S3 addressing style; default: path style with a custom endpoint, virtual-hosted on AWS
    #[arg(long, env = "VAULT_S3_ADDRESSING", global = true, value_enum)]
    pub(crate) s3_addressing: Option<Addressing>,
    /// Seconds with no byte moving before an S3 request is abandoned and retried
    #[arg(
        long,
        env = "VAULT_S3_TIMEOUT",
        global = true,
        default_value_t = 30,
        hide = true
    )]
    pub(crate) s3_timeout: u64,
    /// Attempts per S3 request before giving up (default: as many as --network-wait allows)
    #[arg(long, env = "VAULT_S3_ATTEMPTS", global = true, hide = true)]
    pub(crate) s3_attempts: Option<u32>,
    /// How long to keep retrying while the network or the storage is down, e.g. 10m
    /// [default: 5m; 30m for a run without a terminal]
    #[arg(long, env = "VAULT_NETWORK_WAIT", global = true, value_name = "DURATION",
          value_parser = parse_wait)]
    pub(crate) network_wait: Option<std::time::Duration>,
    /// Uploads and downloads in flight at once (default: 4 for S3, 2 for folders)
    #[arg(long, env = "VAULT_CONNECTIONS", global = true, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) connections: Option<u16>,
    /// Folder for the local index (default: $XDG_CACHE_HOME/vault); only a cache, every row
    /// encrypted, rebuilt from the repository when missing
    #[arg(long, env = "VAULT_CACHE_DIR", global = true, value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Keep the local index in memory only (rebuilt from the repository on every run);
    /// overrides --cache-dir and VAULT_CACHE_DIR
    #[arg(long, global = true)]
    pub(crate) no_cache: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Addressing {
    Path,
    Virtual,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum KeyringArg {
    Platform,
    Keyutils,
    None,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum LockModeArg {
    Governance,
    Compliance,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a new repository
    Init(init::Args),
    /// Manage the ways to unlock the repository (passphrases, recovery keys, identity files)
    #[command(subcommand)]
    Key(key::Cmd),
    /// Back up files and folders (creates the default repository on first use)
    Backup(backup::Args),
    /// Move files into the vault: back up, read every copy back and verify it, then delete the
    /// local originals
    #[command(long_about = mv::MOVE_HELP)]
    Move(mv::Args),
    /// Copy snapshots from one repository into another (re-encrypted for the destination's keys,
    /// then read back and verified there); snapshots copied before are skipped
    Copy(copy::Args),
    /// Name repositories (an external drive, a bucket) to back up to, move into and check
    /// together
    #[command(subcommand)]
    Repo(repo::Cmd),
    /// List snapshots
    Snapshots(snapshots::Args),
    /// List files in a snapshot
    Ls(ls::Args),
    /// Repository size, what each snapshot added, deduplication and vault-only files
    Stats(stats::Args),
    /// Restore files from a snapshot, verifying every byte
    Restore(restore::Args),
    /// Verify the repository; --read-data also downloads and verifies every pack
    Check(check::Args),
    /// Remove snapshots by retention policy (--keep-daily 7 ...) or by id; `vault prune` then
    /// frees the space. Files moved into the vault are never removed unless named
    Forget(Box<forget::Args>),
    /// Free the space of data no snapshot needs: condemn it now, delete it in a run after the
    /// grace period (safe while other computers back up)
    Prune(prune::Args),
    /// Repair a damaged repository
    #[command(subcommand)]
    Repair(repair::Cmd),
}

/// Exit status of a command line that cannot be run as given (as clap's own errors).
pub const EXIT_USAGE: u8 = 2;

/// A command line that cannot be run as given, found after parsing: nothing was done.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// `--network-wait`: a duration as `prune --grace` takes it (plain seconds, or 90s, 10m, 1h).
fn parse_wait(s: &str) -> std::result::Result<std::time::Duration, String> {
    prune::parse_grace(s).map(|secs| std::time::Duration::from_secs(secs.max(0) as u64))
}

/// Refuse the command line: exit status 2, with `msg` as the error.
pub(crate) fn usage<T>(msg: impl std::fmt::Display) -> Result<T> {
    Err(UsageError(msg.to_string()).into())
}

/// Run the parsed command; returns the exit status for a completed run.
pub fn run(cli: Cli) -> Result<u8> {
    let ctx = Ctx::new(&cli);
    if !cli.quiet && std::io::stderr().is_terminal() {
        vault::backend::retry::on_waiting(|w| {
            eprintln!(
                "waiting for the network (retry {}, next in {} s): {}",
                w.retry,
                w.next_in.as_secs_f64().round(),
                w.reason
            );
        });
    }
    match &cli.cmd {
        Cmd::Init(a) => init::run(&ctx, a),
        Cmd::Key(c) => key::run(&ctx, c),
        Cmd::Backup(a) => backup::run(&ctx, a),
        Cmd::Move(a) => mv::run(&ctx, a),
        Cmd::Copy(a) => copy::run(&ctx, a),
        Cmd::Repo(c) => repo::run(&ctx, c),
        Cmd::Snapshots(a) => snapshots::run(&ctx, a),
        Cmd::Ls(a) => ls::run(&ctx, a),
        Cmd::Stats(a) => stats::run(&ctx, a),
        Cmd::Restore(a) => restore::run(&ctx, a),
        Cmd::Check(a) => check::run(&ctx, a),
        Cmd::Forget(a) => forget::run(&ctx, a),
        Cmd::Prune(a) => prune::run(&ctx, a),
        Cmd::Repair(c) => repair::run(&ctx, c),
    }
}

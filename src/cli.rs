//! Command-line interface: argument parsing (clap) and one function per command. This is the
//! edge of the program: errors become `anyhow` here and exit codes in main.rs.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde::Serialize;

use vault::archiver::{self, BackupOptions, Progress};
use vault::backend::local::LocalBackend;
use vault::backend::s3::{S3Backend, S3Options};
use vault::backend::Store;
use vault::cache::CachePlace;
use vault::checker::{self, CheckOptions};
use vault::crypto;
use vault::format::config::{LockMode, ObjectLock};
use vault::format::tree::NodeKind;
use vault::repo::{InitOptions, Method, PackReaders, Repository, Unlock, Wrap};
use vault::restorer::{self, show_path, split_path, RestoreOptions};
use vault::settings::{RepoEntry, Settings};
use vault::treewalk::{self, Found, TreeWalk};

use crate::ui;

mod moving;

/// Exit status: finished, but some files were skipped or not restored.
pub const EXIT_PARTIAL: u8 = 3;

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
        The passphrase is read from VAULT_PASSWORD, from --password-file / VAULT_PASSWORD_FILE, \
        or asked for on the terminal.\n\n\
        Exit status: 0 success, 1 error, 2 usage error, 3 finished but some files were skipped, \
        130 interrupted (running the same command again continues)."
)]
pub struct Cli {
    /// Repository: a folder path, s3://bucket/prefix or a name from `vault repo list`
    /// (default: ~/.local/share/vault/repo)
    #[arg(short, long, env = "VAULT_REPO", global = true, value_name = "REPO")]
    repo: Option<String>,
    /// Read the passphrase from this file
    #[arg(long, env = "VAULT_PASSWORD_FILE", global = true, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Unlock with an age identity file (age-keygen output, or a saved recovery key) instead of
    /// the passphrase
    #[arg(long, env = "VAULT_IDENTITY_FILE", global = true, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Where device keys are kept: the platform store (Secret Service, Keychain, Credential
    /// Manager), the Linux kernel keyutils store, or none
    #[arg(
        long,
        env = "VAULT_KEYRING",
        global = true,
        value_enum,
        default_value = "platform"
    )]
    keyring: KeyringArg,
    /// Use a write-only device profile (from `vault key add --write-only`): back up, never read
    #[arg(
        long,
        env = "VAULT_PROFILE_FILE",
        global = true,
        value_name = "FILE",
        conflicts_with = "identity"
    )]
    profile: Option<PathBuf>,
    /// Print machine-readable JSON on standard output
    #[arg(long, global = true)]
    json: bool,
    /// Print nothing but errors
    #[arg(short, long, global = true)]
    quiet: bool,
    /// S3 endpoint URL for non-AWS services (MinIO, Garage, SeaweedFS, B2, R2, Wasabi, ...)
    #[arg(long, env = "AWS_ENDPOINT_URL", global = true, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// S3 region (default: from the AWS profile, else us-east-1)
    #[arg(long, env = "AWS_REGION", global = true, value_name = "REGION")]
    s3_region: Option<String>,
    /// S3 addressing style; default: path style with a custom endpoint, virtual-hosted on AWS
    #[arg(long, env = "VAULT_S3_ADDRESSING", global = true, value_enum)]
    s3_addressing: Option<Addressing>,
    /// Seconds allowed for one S3 request attempt before it is retried
    #[arg(
        long,
        env = "VAULT_S3_TIMEOUT",
        global = true,
        default_value_t = 300,
        hide = true
    )]
    s3_timeout: u64,
    /// Attempts per S3 request before giving up
    #[arg(
        long,
        env = "VAULT_S3_ATTEMPTS",
        global = true,
        default_value_t = 8,
        hide = true
    )]
    s3_attempts: u32,
    /// Uploads and downloads in flight at once (default: 4 for S3, 2 for folders)
    #[arg(long, env = "VAULT_CONNECTIONS", global = true, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=64))]
    connections: Option<u16>,
    /// Folder for the local index (default: $XDG_CACHE_HOME/vault); only a cache, every row
    /// encrypted, rebuilt from the repository when missing
    #[arg(long, env = "VAULT_CACHE_DIR", global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Keep the local index in memory only (rebuilt from the repository on every run);
    /// overrides --cache-dir and VAULT_CACHE_DIR
    #[arg(long, global = true)]
    no_cache: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Addressing {
    Path,
    Virtual,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum KeyringArg {
    Platform,
    Keyutils,
    None,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LockModeArg {
    Governance,
    Compliance,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a new repository
    Init {
        /// scrypt work factor (log2) for the passphrase key file; higher is slower to guess
        #[arg(long, default_value_t = crypto::DEFAULT_SCRYPT_LOG_N, value_name = "N",
              value_parser = clap::value_parser!(u8).range(10..=22))]
        kdf_log_n: u8,
        /// S3 only: keep every object undeletable for N days (Object Lock; the bucket is created
        /// with Object Lock if it does not exist)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=36500))]
        object_lock_days: Option<u32>,
        /// Object Lock mode: governance (can be lifted with special permission) or compliance
        /// (nobody can delete before the date, not even the account owner)
        #[arg(
            long,
            value_enum,
            default_value = "governance",
            requires = "object_lock_days"
        )]
        object_lock_mode: LockModeArg,
        /// Also write the recovery key to this file (created 0600; keep it off this computer)
        #[arg(long, value_name = "FILE")]
        recovery_key_file: Option<PathBuf>,
    },
    /// Manage the ways to unlock the repository (passphrases, recovery keys, identity files)
    #[command(subcommand)]
    Key(KeyCmd),
    /// Back up files and folders (creates the default repository on first use)
    Backup {
        /// Files and folders to back up
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Back up to these repositories, one after the other (names from `vault repo list`
        /// or addresses, comma-separated) instead of --repo
        #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
        to: Vec<String>,
        /// Tag the snapshot (repeatable)
        #[arg(long, value_name = "TAG")]
        tag: Vec<String>,
        /// Skip paths matching this glob; without '/' it matches file names (repeatable)
        #[arg(long, value_name = "GLOB")]
        exclude: Vec<String>,
        /// Host name recorded in the snapshot
        #[arg(long)]
        host: Option<String>,
        /// Read every file, even those whose size, mtime and inode say they are unchanged
        /// (catches content edited in place with the mtime set back; slower)
        #[arg(long)]
        force_reread: bool,
    },
    /// Move files into the vault: back up, read every copy back and verify it, then delete the
    /// local originals
    #[command(long_about = moving::MOVE_HELP)]
    Move {
        /// Files and folders to move
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Repositories to move into (names or addresses, comma-separated); default: every
        /// repository in `vault repo list`, else --repo
        #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
        to: Vec<String>,
        /// Repositories a file must verify in before its original is deleted; 1 means the
        /// vault holds the only copy
        #[arg(long, default_value_t = 2, value_name = "N",
              value_parser = clap::value_parser!(u16).range(1..=16))]
        copies: u16,
        /// Show what would move, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Leave paths matching this glob in place; without '/' it matches file names (repeatable)
        #[arg(long, value_name = "GLOB")]
        exclude: Vec<String>,
        /// Tag the snapshot (repeatable; "moved" is always added)
        #[arg(long, value_name = "TAG")]
        tag: Vec<String>,
        /// Host name recorded in the snapshot
        #[arg(long)]
        host: Option<String>,
    },
    /// Copy snapshots from one repository into another (re-encrypted for the destination's keys,
    /// then read back and verified there); snapshots copied before are skipped
    Copy {
        /// Source repository (a name from `vault repo list`, or an address)
        #[arg(long, value_name = "REPO")]
        from: String,
        /// Destination repository
        #[arg(long, value_name = "REPO")]
        to: String,
        /// Snapshots to copy (`latest` or at least 4 hex digits); default: all
        #[arg(value_name = "SNAPSHOT")]
        snapshots: Vec<String>,
    },
    /// Name repositories (an external drive, a bucket) to back up to, move into and check
    /// together
    #[command(subcommand)]
    Repo(RepoCmd),
    /// List snapshots
    Snapshots {
        /// Stop warning, on this computer, about the snapshots now reported missing from the
        /// repository, once you know why they are gone (other computers still warn)
        #[arg(long)]
        acknowledge_missing: bool,
    },
    /// List files in a snapshot
    Ls {
        /// `latest` or at least 4 hex digits of a snapshot id
        #[arg(default_value = "latest")]
        snapshot: String,
        /// Only list under this path inside the snapshot
        path: Option<String>,
        /// List the files that live only in the vault (moved with `vault move`), from every
        /// snapshot; a path narrows the list
        #[arg(long, conflicts_with = "snapshot")]
        vault_only: bool,
    },
    /// Restore files from a snapshot, verifying every byte
    Restore {
        /// `latest` or at least 4 hex digits of a snapshot id
        #[arg(default_value = "latest")]
        snapshot: String,
        /// Folder to restore into (snapshot paths are recreated below it); with --vault-only
        /// the default is `/`, the files' original places
        #[arg(
            short,
            long,
            value_name = "DIR",
            required_unless_present = "vault_only"
        )]
        target: Option<PathBuf>,
        /// Restore only this path from the snapshot (repeatable)
        #[arg(long, value_name = "PATH")]
        include: Vec<String>,
        /// Replace files that already exist in the target
        #[arg(long)]
        overwrite: bool,
        /// Bring back the files moved into the vault (from every snapshot, the newest copy of
        /// each), to their original places unless --target is given
        #[arg(long, conflicts_with = "snapshot")]
        vault_only: bool,
    },
    /// Verify the repository; --read-data also downloads and verifies every pack
    Check {
        /// Read and verify all data, not just the structure
        #[arg(long)]
        read_data: bool,
        /// Check every repository in `vault repo list`
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum RepoCmd {
    /// Name a repository: `vault repo add drive /media/me/disk/vault`,
    /// `vault repo add cloud s3://bucket/vault --s3-endpoint URL`
    Add {
        /// A short name (letters, digits, '-', '_') to use with --repo and --to
        name: String,
        /// A folder path or s3://bucket/prefix (the S3 endpoint, region and addressing given
        /// now are remembered with it)
        #[arg(value_name = "REPO")]
        address: String,
        /// Read this repository's passphrase from this file (for unattended runs)
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// List the named repositories
    List,
    /// Forget a name (the repository itself is not touched)
    Remove { name: String },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// List the key files (one per unlock method)
    List,
    /// Add an unlock method; only key files are written
    Add {
        /// A new passphrase (from VAULT_NEW_PASSWORD, or asked twice)
        #[arg(long, group = "method")]
        passphrase: bool,
        /// A new recovery key, shown once (and written to --recovery-key-file if given)
        #[arg(long, group = "method")]
        recovery: bool,
        /// An age identity file (age-keygen output) that will unlock the repository
        #[arg(long, group = "method", value_name = "FILE")]
        identity_file: Option<PathBuf>,
        /// An age recipient (age1...) whose identity will unlock the repository
        #[arg(long, group = "method", value_name = "AGE1...")]
        recipient: Option<String>,
        /// A write-only device profile, written to --profile-file: it backs up and reads nothing
        #[arg(long, group = "method", requires = "profile_file")]
        write_only: bool,
        /// With --write-only: where to write the profile (created 0600)
        #[arg(long, value_name = "FILE")]
        profile_file: Option<PathBuf>,
        /// With --write-only: a name for the device
        #[arg(long, default_value = "write-only device")]
        label: String,
        /// With --recovery: write the recovery key to this file too (created 0600)
        #[arg(long, value_name = "FILE", requires = "recovery")]
        recovery_key_file: Option<PathBuf>,
        /// With --passphrase: scrypt work factor (log2)
        #[arg(long, default_value_t = crypto::DEFAULT_SCRYPT_LOG_N, value_name = "N",
              value_parser = clap::value_parser!(u8).range(10..=22))]
        kdf_log_n: u8,
    },
    /// Remove an unlock method by key id (see `vault key list`); the last one cannot be removed
    Remove {
        /// At least 4 hex digits of the key id
        id: String,
    },
    /// Prove that a recovery key (or the --identity file) unlocks the repository; changes nothing
    VerifyRecovery,
    /// Keep a device key in the OS keyring so this device runs without a passphrase
    Remember,
    /// Remove this device's key from the OS keyring and from the repository
    ForgetDevice,
}

enum RepoSpec {
    Local(PathBuf),
    S3(S3Options),
}

fn default_repo() -> Result<PathBuf> {
    let base = dirs::data_dir().context("cannot find your data folder; give --repo")?;
    Ok(base.join("vault").join("repo"))
}

/// One repository a command works on: the default one, an address, or a name from the settings
/// file (whose own S3 settings and passphrase file take precedence over the global ones).
#[derive(Clone)]
pub(crate) struct Target {
    /// The settings name, when the repository was named.
    name: Option<String>,
    /// Folder path or s3:// address; None for the default repository.
    address: Option<String>,
    entry: RepoEntry,
}

impl Target {
    /// How messages refer to it: its name, else its address.
    pub(crate) fn label(&self, store: &Store) -> String {
        self.name.clone().unwrap_or_else(|| store.location())
    }
}

/// A name from the settings file, unless it looks like a path or an address.
fn looks_like_name(s: &str) -> bool {
    vault::settings::valid_name(s) && !s.contains('/')
}

impl Cli {
    fn settings(&self) -> Result<Settings> {
        let path = Settings::default_path()
            .context("cannot find your configuration folder; set VAULT_CONFIG")?;
        Ok(Settings::load(&path)?)
    }

    /// The repository of `--repo` (a name or an address), else the default one.
    fn target(&self) -> Result<Target> {
        match &self.repo {
            Some(r) => self.resolve(r),
            None => Ok(Target {
                name: None,
                address: None,
                entry: RepoEntry::default(),
            }),
        }
    }

    /// A repository given by name (from the settings file) or by address.
    fn resolve(&self, r: &str) -> Result<Target> {
        if looks_like_name(r) {
            if let Some(e) = self.settings()?.get(r) {
                return Ok(Target {
                    name: Some(r.to_string()),
                    address: Some(e.address.clone()),
                    entry: e.clone(),
                });
            }
        }
        Ok(Target {
            name: None,
            address: Some(r.to_string()),
            entry: RepoEntry::default(),
        })
    }

    /// `--to a,b` (names or addresses); empty means every repository in the settings file.
    fn targets(&self, names: &[String]) -> Result<Vec<Target>> {
        if names.is_empty() {
            let s = self.settings()?;
            let all: Vec<Target> = s
                .repositories()
                .map(|(n, e)| Target {
                    name: Some(n.clone()),
                    address: Some(e.address.clone()),
                    entry: e.clone(),
                })
                .collect();
            if all.is_empty() {
                return Ok(vec![self.target()?]);
            }
            return Ok(all);
        }
        let mut out: Vec<Target> = Vec::new();
        for n in names {
            let t = self.resolve(n)?;
            if out.iter().any(|o| o.address == t.address) {
                bail!("{n} is given twice");
            }
            out.push(t);
        }
        Ok(out)
    }

    fn repo_spec(&self, t: &Target) -> Result<(RepoSpec, bool)> {
        match &t.address {
            Some(r) if r.starts_with("s3://") => {
                let mut o = S3Options::parse(r)?;
                let pick = |own: &Option<String>, global: &Option<String>| {
                    own.clone()
                        .or_else(|| global.clone())
                        .filter(|e| !e.is_empty())
                };
                o.endpoint = pick(&t.entry.endpoint, &self.s3_endpoint);
                o.region = pick(&t.entry.region, &self.s3_region);
                o.path_style = match t.entry.addressing.as_deref() {
                    Some("path") => Some(true),
                    Some("virtual") => Some(false),
                    Some(other) => {
                        bail!("addressing {other:?} in the settings file: use path or virtual")
                    }
                    None => self.s3_addressing.map(|a| matches!(a, Addressing::Path)),
                };
                o.attempt_timeout = std::time::Duration::from_secs(self.s3_timeout.max(1));
                o.max_attempts = self.s3_attempts.max(1);
                Ok((RepoSpec::S3(o), false))
            }
            Some(r) if r.contains("://") => {
                bail!(
                    "unsupported repository address {r:?}: use a folder path, s3://bucket/prefix \
                     or a name from `vault repo list`"
                )
            }
            Some(r) => Ok((RepoSpec::Local(PathBuf::from(r)), false)),
            None => Ok((RepoSpec::Local(default_repo()?), true)),
        }
    }

    fn store(&self) -> Result<(Store, bool)> {
        self.store_of(&self.target()?)
    }

    fn store_of(&self, t: &Target) -> Result<(Store, bool)> {
        let (spec, is_default) = self.repo_spec(t)?;
        let backend: Arc<dyn vault::backend::Backend> = match spec {
            RepoSpec::Local(p) => Arc::new(LocalBackend::new(p)),
            RepoSpec::S3(o) => Arc::new(S3Backend::new(o)),
        };
        Ok((Store::new(backend)?, is_default))
    }

    fn open(&self) -> Result<Repository> {
        let t = self.target()?;
        let (store, is_default) = self.store_of(&t)?;
        if is_default && !Repository::exists(&store)? {
            // Someone who works with named repositories forgot --repo.
            let names: Vec<String> = self
                .settings()
                .map(|s| s.repositories().map(|(n, _)| n.clone()).collect())
                .unwrap_or_default();
            if !names.is_empty() {
                bail!(
                    "no vault repository at {} (the default); name one with --repo: {}",
                    store.location(),
                    names.join(", ")
                );
            }
        }
        self.open_store(&t, store)
    }

    /// Open an existing repository; also returns how messages name it.
    fn open_target(&self, t: &Target) -> Result<(Repository, String)> {
        let (store, _) = self.store_of(t)?;
        let label = t.label(&store);
        Ok((self.open_store(t, store)?, label))
    }

    fn open_store(&self, t: &Target, store: Store) -> Result<Repository> {
        Ok(self.open_store_how(t, store)?.0)
    }

    /// Open and unlock; also says whether a secret the user holds was used (a passphrase or an
    /// identity file) rather than this device's keyring entry or a write-only profile.
    fn open_store_how(&self, t: &Target, store: Store) -> Result<(Repository, bool)> {
        let mut user_secret = false;
        if !Repository::exists(&store)? {
            return Err(vault::Error::NoRepository(store.location()).into());
        }
        let repo = if let Some(file) = &self.profile {
            let text =
                zeroize::Zeroizing::new(std::fs::read_to_string(file).with_context(|| {
                    format!("cannot read the device profile {}", file.display())
                })?);
            Repository::open_with_material(store, vault::repo::parse_profile(&text)?)?
        } else if let Some(file) = &self.identity {
            let ids = ui::identity_file(file)?;
            user_secret = true;
            Repository::unlock(store, &Unlock::Identities(&ids, "identity"))?
        } else if let Some(repo) = self.unlock_with_device_key(t, &store)? {
            repo
        } else {
            let pass = ui::passphrase(
                t.entry
                    .passphrase_file
                    .as_deref()
                    .or(self.password_file.as_deref()),
                &format!("Passphrase for {}: ", store.location()),
                false,
            )?;
            user_secret = true;
            Repository::open(store, &pass)?
        };
        let mut repo = repo;
        repo.set_cache_place(self.cache_place());
        Ok((repo, user_secret))
    }

    fn cache_place(&self) -> CachePlace {
        match &self.cache_dir {
            _ if self.no_cache => CachePlace::Memory,
            Some(d) => CachePlace::Dir(d.clone()),
            None => CachePlace::from_env(),
        }
    }

    fn keyring_store(&self) -> Option<vault::devicekey::Store> {
        match self.keyring {
            KeyringArg::Platform => Some(vault::devicekey::Store::Platform),
            KeyringArg::Keyutils => Some(vault::devicekey::Store::Keyutils),
            KeyringArg::None => None,
        }
    }

    /// The name under which this repository's device key is kept.
    fn keyring_name(&self, t: &Target, store: &Store) -> String {
        match &t.address {
            Some(r) if r.starts_with("s3://") => {
                match t.entry.endpoint.as_ref().or(self.s3_endpoint.as_ref()) {
                    Some(e) if !e.is_empty() => format!("{r} at {e}"),
                    _ => r.clone(),
                }
            }
            _ => std::path::absolute(store.location())
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| store.location()),
        }
    }

    /// Unlock with the device key from the OS keyring, unless a passphrase was given explicitly.
    fn unlock_with_device_key(&self, t: &Target, store: &Store) -> Result<Option<Repository>> {
        if std::env::var_os("VAULT_PASSWORD").is_some()
            || self.password_file.is_some()
            || t.entry.passphrase_file.is_some()
        {
            return Ok(None);
        }
        let Some(kr) = self.keyring_store() else {
            return Ok(None);
        };
        let Some(dk) = vault::devicekey::recall(kr, &self.keyring_name(t, store))? else {
            return Ok(None);
        };
        let ids = vault::crypto::Identities::parse(&dk.identity)?;
        match Repository::unlock(store.clone(), &Unlock::Identities(&ids, "device key")) {
            Ok(r) => Ok(Some(r)),
            Err(e @ (vault::Error::WrongKey(_) | vault::Error::KeyRemoved(_))) => {
                eprintln!(
                    "warning: {e}; asking for the passphrase (run `vault key remember` again)"
                );
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Transfers in flight: the option, else 4 for S3 and 2 for folders.
    fn connections(&self, t: &Target) -> usize {
        match (self.connections, &t.address) {
            (Some(n), _) => n as usize,
            (None, Some(r)) if r.starts_with("s3://") => 4,
            _ => 2,
        }
    }

    fn progress(&self) -> bool {
        !self.quiet && !self.json
    }
}

fn json_out<T: Serialize>(v: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Run the parsed command; returns the exit status for a completed run.
pub fn run(cli: Cli) -> Result<u8> {
    match &cli.cmd {
        Cmd::Init {
            kdf_log_n,
            object_lock_days,
            object_lock_mode,
            recovery_key_file,
        } => {
            let lock = object_lock_days.map(|days| ObjectLock {
                days,
                mode: match object_lock_mode {
                    LockModeArg::Governance => LockMode::Governance,
                    LockModeArg::Compliance => LockMode::Compliance,
                },
            });
            init(&cli, *kdf_log_n, lock, recovery_key_file.as_deref())
        }
        Cmd::Key(k) => key(&cli, k),
        Cmd::Backup {
            paths,
            to,
            tag,
            exclude,
            host,
            force_reread,
        } => backup(
            &cli,
            to,
            &BackupArgs {
                paths,
                tags: tag,
                excludes: exclude,
                host: host.clone(),
                force_reread: *force_reread,
            },
        ),
        Cmd::Move {
            paths,
            to,
            copies,
            dry_run,
            exclude,
            tag,
            host,
        } => {
            let mut tags = tag.clone();
            tags.push("moved".into());
            moving::move_files(
                &cli,
                to,
                *copies as usize,
                *dry_run,
                &BackupArgs {
                    paths,
                    tags: &tags,
                    excludes: exclude,
                    host: host.clone(),
                    force_reread: true,
                },
            )
        }
        Cmd::Repo(r) => moving::repo_cmd(&cli, r),
        Cmd::Copy {
            from,
            to,
            snapshots,
        } => moving::copy(&cli, from, to, snapshots),
        Cmd::Snapshots {
            acknowledge_missing,
        } => snapshots(&cli, *acknowledge_missing),
        Cmd::Ls {
            vault_only: true,
            path,
            ..
        } => moving::ls_vault_only(&cli, path.as_deref()),
        Cmd::Ls { snapshot, path, .. } => ls(&cli, snapshot, path.as_deref()),
        Cmd::Restore {
            target,
            include,
            overwrite,
            vault_only: true,
            ..
        } => moving::restore_vault_only(&cli, target.as_deref(), include, *overwrite),
        Cmd::Restore {
            snapshot,
            target,
            include,
            overwrite,
            ..
        } => restore(
            &cli,
            snapshot,
            target.as_deref().context("--target is required")?,
            include,
            *overwrite,
        ),
        Cmd::Check { read_data, all } => {
            if *all {
                moving::check_all(&cli, *read_data)
            } else {
                check(&cli, &cli.target()?, *read_data)
            }
        }
    }
}

fn create(
    cli: &Cli,
    store: Store,
    log_n: u8,
    object_lock: Option<ObjectLock>,
    recovery_file: Option<&std::path::Path>,
) -> Result<Repository> {
    let pass = ui::passphrase(
        cli.password_file.as_deref(),
        &format!("New passphrase for {}: ", store.location()),
        true,
    )?;
    let location = store.location();
    let mut repo = Repository::init(
        store,
        &pass,
        &InitOptions {
            scrypt_log_n: log_n,
            object_lock,
            chunking: None,
        },
    )?;
    if !cli.quiet {
        eprintln!(
            "created repository {} at {location}",
            repo.repo_id().short()
        );
    }
    add_recovery_key(&repo, recovery_file)?;
    repo.set_cache_place(cli.cache_place());
    Ok(repo)
}

/// Say when the local index is not where it should be, or the repository index is damaged.
fn warn_index(repo: &Repository) -> Result<()> {
    if let Some(why) = &repo.cache()?.fallback {
        eprintln!("warning: the local index is kept in memory this run ({why})");
    }
    for (name, e) in repo.index_errors()? {
        eprintln!(
            "warning: index {} is unreadable ({e}); run `vault check`",
            &name[..8.min(name.len())]
        );
    }
    warn_missing_snapshots(repo);
    Ok(())
}

fn warn_missing_snapshots(repo: &Repository) {
    let missing = repo.missing_snapshots();
    if missing.is_empty() {
        return;
    }
    let ids: Vec<String> = missing.iter().map(|id| id.short()).collect();
    eprintln!(
        "warning: {} snapshot(s) missing from the repository: {}. This computer saw them, or \
         later snapshots were made after them, and vault never deletes snapshots: someone \
         deleted them, or the storage was rolled back to an older state. Check who can write to \
         it and run `vault check`; once you know why, `vault snapshots --acknowledge-missing` \
         stops this warning on this computer.",
        ids.len(),
        ids.join(", ")
    );
}

/// Generate a recovery key, add it as a key file, and show it once.
fn add_recovery_key(repo: &Repository, file: Option<&std::path::Path>) -> Result<()> {
    let recovery = crypto::DataIdentity::generate();
    let id = repo.add_key(
        &Wrap::Recipients(&crypto::KeyRecipients::x25519(&recovery.recipient())),
        Method::RecoveryKey,
        "recovery key",
    )?;
    let secret = recovery.to_secret_string();
    if let Some(f) = file {
        ui::write_secret_file(
            f,
            &format!(
                "# vault recovery key for repository {}\n{}\n",
                repo.repo_id().short(),
                *secret
            ),
        )?;
    }
    // Shown on the terminal, never in --json output or logs.
    eprintln!(
        "\nRECOVERY KEY (key {id}) for repository {}:\n\n    {}\n\n\
         Write it down or print it and keep it away from this computer. With it you can read your\n\
         backups if you forget the passphrase: save it in a file and use `--identity FILE`.\n\
         This is the only time it is shown{}.",
        repo.repo_id().short(),
        *secret,
        file.map(|f| format!(" (also saved to {})", f.display()))
            .unwrap_or_default()
    );
    Ok(())
}

fn init(
    cli: &Cli,
    log_n: u8,
    object_lock: Option<ObjectLock>,
    recovery_file: Option<&std::path::Path>,
) -> Result<u8> {
    let (store, _) = cli.store()?;
    let repo = create(cli, store, log_n, object_lock, recovery_file)?;
    if cli.json {
        json_out(
            &serde_json::json!({ "repository": repo.repo_id().to_hex(), "location": repo.store().location() }),
        )?;
    }
    Ok(0)
}

struct BackupArgs<'a> {
    paths: &'a [PathBuf],
    tags: &'a [String],
    excludes: &'a [String],
    host: Option<String>,
    force_reread: bool,
}

fn backup(cli: &Cli, to: &[String], a: &BackupArgs<'_>) -> Result<u8> {
    // Check the paths before asking for a passphrase or creating anything.
    for p in a.paths {
        std::fs::symlink_metadata(p).with_context(|| format!("cannot back up {}", p.display()))?;
    }
    if to.is_empty() {
        let t = cli.target()?;
        let (store, is_default) = cli.store_of(&t)?;
        let repo = if is_default && cli.profile.is_none() && !Repository::exists(&store)? {
            if !cli.quiet {
                eprintln!(
                    "no repository yet; creating the default one at {}",
                    store.location()
                );
            }
            create(cli, store, crypto::DEFAULT_SCRYPT_LOG_N, None, None)?
        } else {
            cli.open_store(&t, store)?
        };
        let s = backup_into(cli, &t, &repo, a)?;
        if cli.json {
            json_out(&s)?;
        }
        return Ok(report_backup(cli, None, &s));
    }
    // Several repositories: each gets its own backup (their chunking keys differ), one after the
    // other; one that fails does not stop the others.
    let mut status = 0;
    let mut out = Vec::new();
    for t in cli.targets(to)? {
        let r = cli.open_target(&t).and_then(|(repo, label)| {
            if !cli.quiet && !cli.json {
                eprintln!("backing up to {label}");
            }
            Ok((backup_into(cli, &t, &repo, a)?, label))
        });
        match r {
            Ok((s, label)) => {
                status = status.max(report_backup(cli, Some(&label), &s));
                out.push(serde_json::json!({ "repository": label, "summary": s }));
            }
            Err(e) => {
                let label = t.name.clone().or(t.address.clone()).unwrap_or_default();
                eprintln!("error: {label}: {e:#}");
                status = 1;
                out.push(serde_json::json!({ "repository": label, "error": format!("{e:#}") }));
            }
        }
    }
    if cli.json {
        json_out(&out)?;
    }
    Ok(status)
}

fn backup_options(cli: &Cli, t: &Target, a: &BackupArgs<'_>) -> Result<BackupOptions> {
    Ok(BackupOptions {
        paths: a.paths.to_vec(),
        tags: a.tags.to_vec(),
        excludes: a.excludes.to_vec(),
        host: a
            .host
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
        threads: 0,
        uploads: cli.connections(t),
        // Backing up a folder that holds the repository must not copy the repository into itself.
        exclude_paths: match cli.repo_spec(t)? {
            (RepoSpec::Local(p), _) => vec![p],
            _ => vec![],
        },
        force_reread: a.force_reread,
        count_first: ui::ProgressView::shown(cli.progress()),
    })
}

fn backup_into(
    cli: &Cli,
    t: &Target,
    repo: &Repository,
    a: &BackupArgs<'_>,
) -> Result<archiver::BackupSummary> {
    let opts = backup_options(cli, t, a)?;
    let progress = Arc::new(Progress::default());
    let view = ui::ProgressView::start(progress.clone(), "backup", cli.progress());
    let res = archiver::backup(repo, &opts, progress);
    view.finish();
    let s = res?;
    warn_index(repo)?;
    Ok(s)
}

/// Print a backup's outcome (not the JSON); returns its exit status.
fn report_backup(cli: &Cli, label: Option<&str>, s: &archiver::BackupSummary) -> u8 {
    if !cli.json && !cli.quiet {
        println!(
            "{}snapshot {} saved",
            label.map(|l| format!("{l}: ")).unwrap_or_default(),
            &s.snapshot[..8]
        );
        println!(
            "  {} files ({} unchanged, not read), {} folders, {} symlinks; read {}, added {} ({} new chunks, {} reused, {} packs)",
            s.files,
            s.files_unchanged,
            s.dirs,
            s.symlinks,
            ui::bytes(s.bytes_read),
            ui::bytes(s.bytes_added),
            s.blobs_new,
            s.blobs_reused,
            s.packs_written
        );
    }
    for w in &s.warnings {
        eprintln!("warning: {}: {}", w.path, w.reason);
    }
    for k in &s.skipped {
        eprintln!("skipped: {}: {}", k.path, k.reason);
    }
    if !s.skipped.is_empty() {
        eprintln!("{} item(s) were skipped (exit status 3)", s.skipped.len());
        return EXIT_PARTIAL;
    }
    if !s.warnings.is_empty() {
        return EXIT_PARTIAL;
    }
    0
}

#[derive(Serialize)]
struct SnapshotJson {
    id: String,
    time: i64,
    host: String,
    paths: Vec<String>,
    tags: Vec<String>,
    parent: Option<String>,
    sequence: u64,
    files: u64,
    bytes: u64,
}

fn snapshots(cli: &Cli, acknowledge_missing: bool) -> Result<u8> {
    let repo = cli.open()?;
    let (snaps, bad) = repo.snapshots()?;
    for (name, e) in &bad {
        eprintln!("warning: snapshot {}: {e}", &name[..8]);
    }
    if acknowledge_missing {
        let ids = repo.acknowledge_missing_snapshots()?;
        let ids: Vec<String> = ids.iter().map(|id| id.short()).collect();
        if ids.is_empty() {
            eprintln!("no missing snapshots to acknowledge");
        } else {
            eprintln!(
                "acknowledged {} missing snapshot(s) on this computer: {}. This computer stops \
                 warning about them; other computers still do.",
                ids.len(),
                ids.join(", ")
            );
        }
    }
    warn_missing_snapshots(&repo);
    if cli.json {
        let v: Vec<SnapshotJson> = snaps
            .iter()
            .map(|(id, s)| SnapshotJson {
                id: id.to_hex(),
                time: s.time,
                host: s.host.clone(),
                paths: s
                    .paths
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect(),
                tags: s.tags.clone(),
                parent: s.parent.map(|p| p.to_hex()),
                sequence: s.sequence,
                files: s.summary.files,
                bytes: s.summary.bytes,
            })
            .collect();
        json_out(&v)?;
    } else if !cli.quiet {
        println!(
            "{:<8}  {:<19}  {:<12}  {:>7}  {:>10}  paths",
            "id", "time (UTC)", "host", "files", "size"
        );
        for (id, s) in &snaps {
            let paths: Vec<String> = s
                .paths
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            let tags = if s.tags.is_empty() {
                String::new()
            } else {
                format!("  [{}]", s.tags.join(","))
            };
            println!(
                "{:<8}  {:<19}  {:<12}  {:>7}  {:>10}  {}{}",
                id.short(),
                ui::time(s.time),
                s.host,
                s.summary.files,
                ui::bytes(s.summary.bytes),
                paths.join(" "),
                tags
            );
        }
        println!("{} snapshot(s)", snaps.len());
    }
    Ok(if bad.is_empty() { 0 } else { 1 })
}

#[derive(Serialize)]
struct LsEntry {
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    mode: String,
    mtime: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
}

fn mode_string(kind: &NodeKind, mode: u32) -> String {
    let t = match kind {
        NodeKind::Dir { .. } => 'd',
        NodeKind::Symlink { .. } => 'l',
        NodeKind::File { .. } => '-',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let b = (mode >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn ls(cli: &Cli, snapshot: &str, path: Option<&str>) -> Result<u8> {
    let repo = cli.open()?;
    let (_, snap) = repo.find_snapshot(snapshot)?;
    warn_missing_snapshots(&repo);
    let mut readers = PackReaders::default();
    let want = path.map(split_path).unwrap_or_default();
    let top = match treewalk::resolve(&repo, &snap.root, &want, &mut readers)? {
        None => bail!("{} is not in the snapshot", path.unwrap_or("")),
        Some(Found::Entry(node)) => {
            return print_ls(cli, std::iter::once(entry(&want, &node)), None)
        }
        Some(Found::Folder(top)) => top,
    };
    // Entries are printed as they are read: a folder of a million photos is never held whole.
    let mut walk = TreeWalk::new(&repo, top, want);
    let failed = std::cell::RefCell::new(None);
    let entries = std::iter::from_fn(|| match walk.next_entry() {
        Ok(e) => e.map(|(p, n)| entry(&p, &n)),
        Err(e) => {
            *failed.borrow_mut() = Some(e);
            None
        }
    });
    print_ls(cli, entries, Some(&failed))
}

fn entry(path: &[Vec<u8>], n: &vault::format::tree::Node) -> LsEntry {
    LsEntry {
        path: show_path(path),
        kind: match n.kind {
            NodeKind::Dir { .. } => "dir",
            NodeKind::File { .. } => "file",
            NodeKind::Symlink { .. } => "symlink",
        },
        size: n.size,
        mode: mode_string(&n.kind, n.mode),
        mtime: n.mtime,
        target: match &n.kind {
            NodeKind::Symlink { target } => Some(String::from_utf8_lossy(target).into_owned()),
            _ => None,
        },
    }
}

/// Print entries as they come (a JSON array with --json); `failed` holds the error that ended
/// them early, if one did. A reader that stops reading (`vault ls | head`) ends the listing
/// quietly: it has what it wanted.
fn print_ls(
    cli: &Cli,
    entries: impl Iterator<Item = LsEntry>,
    failed: Option<&std::cell::RefCell<Option<vault::Error>>>,
) -> Result<u8> {
    match write_ls(cli, entries) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
        r => r?,
    }
    if let Some(e) = failed.and_then(|f| f.borrow_mut().take()) {
        return Err(e.into());
    }
    Ok(0)
}

fn write_ls(cli: &Cli, entries: impl Iterator<Item = LsEntry>) -> std::io::Result<()> {
    let mut o = std::io::BufWriter::new(std::io::stdout().lock());
    if cli.json {
        let mut ser = serde_json::Serializer::pretty(&mut o);
        serde::Serializer::collect_seq(&mut ser, entries).map_err(std::io::Error::from)?;
        writeln!(o)?;
    } else if !cli.quiet {
        for e in entries {
            let link = e
                .target
                .as_ref()
                .map(|t| format!(" -> {t}"))
                .unwrap_or_default();
            writeln!(
                o,
                "{} {:>12} {} {}{}",
                e.mode,
                e.size,
                ui::time(e.mtime),
                e.path,
                link
            )?;
        }
    } else {
        entries.for_each(drop);
    }
    o.flush()
}

fn restore(
    cli: &Cli,
    snapshot: &str,
    target: &std::path::Path,
    include: &[String],
    overwrite: bool,
) -> Result<u8> {
    let repo = cli.open()?;
    let (id, snap) = repo.find_snapshot(snapshot)?;
    let opts = RestoreOptions {
        target: target.to_path_buf(),
        includes: include.iter().map(|s| split_path(s)).collect(),
        overwrite,
        threads: (2 * vault::worker_count(0)).max(cli.connections(&cli.target()?)),
        vault_only: false,
    };
    let progress = Arc::new(Progress::default());
    let view = ui::ProgressView::start(progress.clone(), "restore", cli.progress());
    let res = restorer::restore(&repo, &id, &snap, &opts, progress);
    view.finish();
    let s = res?;
    warn_index(&repo)?;
    if cli.json {
        json_out(&s)?;
    } else if !cli.quiet {
        println!(
            "restored {} files ({}), {} folders, {} symlinks from snapshot {} into {}",
            s.files,
            ui::bytes(s.bytes),
            s.dirs,
            s.symlinks,
            id.short(),
            target.display()
        );
        if s.already > 0 {
            println!(
                "{} item(s) were already there, identical to the snapshot, and were left as they are",
                s.already
            );
        }
    }
    for k in &s.skipped {
        eprintln!("skipped: {}: {}", k.path, k.reason);
    }
    for k in &s.errors {
        eprintln!("error: {}: {}", k.path, k.reason);
    }
    warn_not_kept(&s);
    if !s.errors.is_empty() {
        eprintln!("{} item(s) could not be restored", s.errors.len());
        return Ok(1);
    }
    if !s.skipped.is_empty() {
        return Ok(EXIT_PARTIAL);
    }
    Ok(0)
}

/// What the target could not keep: owners (run as root) and permissions. The content is restored
/// either way; these say what differs from the snapshot, and whether private items are exposed.
fn warn_not_kept(s: &restorer::RestoreSummary) {
    if s.owners_not_set > 0 {
        eprintln!(
            "warning: the recorded owner could not be set on {} item(s) ({}); they belong to root. \
             Their content and times are restored.",
            s.owners_not_set,
            s.owner_failure.as_deref().unwrap_or("unknown reason")
        );
    }
    if s.modes_not_kept > 0 {
        eprintln!(
            "warning: the target's filesystem does not keep permissions (as FAT and exFAT): {} \
             item(s) have other permissions than the snapshot records.",
            s.modes_not_kept
        );
    }
    if s.private_exposed > 0 {
        eprintln!(
            "warning: {} of them were private (no access for other users) and are not private \
             here: anyone who can read this drive can open them.",
            s.private_exposed
        );
    }
}

fn check(cli: &Cli, t: &Target, read_data: bool) -> Result<u8> {
    let (code, r) = check_report(cli, t, read_data)?;
    if cli.json {
        json_out(&r)?;
    }
    Ok(code)
}

/// Run `check` on one repository and print the text report; the JSON is left to the caller.
fn check_report(cli: &Cli, t: &Target, read_data: bool) -> Result<(u8, checker::CheckReport)> {
    let (repo, _) = cli.open_target(t)?;
    let progress = Arc::new(Progress::default());
    let view = ui::ProgressView::start(progress.clone(), "check", cli.progress() && read_data);
    let res = checker::check(
        &repo,
        &CheckOptions {
            read_data,
            threads: vault::worker_count(0).max(cli.connections(t)),
        },
        progress,
    );
    view.finish();
    let r = res?;
    if !cli.json {
        for n in &r.notes {
            if !cli.quiet {
                println!("note: {n}");
            }
        }
        for e in &r.errors {
            eprintln!("error: {e}");
        }
        for f in &r.damaged_files {
            eprintln!("damaged: {f}");
        }
        for f in &r.vault_only_damaged {
            eprintln!(
                "error: vault-only file damaged or missing: {f}: its original was moved into the \
                 vault; restore it from another repository (`vault --repo OTHER restore \
                 --vault-only`) and move it again"
            );
        }
        if !cli.quiet {
            println!(
                "{} snapshots, {} trees, {} packs{}{}: {}",
                r.snapshots,
                r.trees,
                r.packs,
                if r.vault_only_files > 0 {
                    format!(", {} vault-only files", r.vault_only_files)
                } else {
                    String::new()
                },
                if read_data {
                    format!(
                        " ({} read, {} blobs verified)",
                        r.packs_read, r.blobs_verified
                    )
                } else {
                    String::new()
                },
                if r.ok() {
                    "no errors".to_string()
                } else if r.vault_only_damaged.is_empty() {
                    "ERRORS FOUND".to_string()
                } else {
                    format!(
                        "ERRORS FOUND, {} of them in vault-only files",
                        r.vault_only_damaged.len()
                    )
                }
            );
        }
    }
    Ok((if r.ok() { 0 } else { 1 }, r))
}

fn key(cli: &Cli, cmd: &KeyCmd) -> Result<u8> {
    if let KeyCmd::VerifyRecovery = cmd {
        return verify_recovery(cli);
    }
    if let KeyCmd::ForgetDevice = cmd {
        return forget_device(cli);
    }
    let repo = cli.open()?;
    match cmd {
        KeyCmd::List => {
            let keys = repo.key_files()?;
            if cli.json {
                json_out(&keys)?;
            } else {
                for k in &keys {
                    println!(
                        "{}  {:<13}{}",
                        k.id,
                        k.kind,
                        if k.current { "  (used now)" } else { "" }
                    );
                }
            }
        }
        KeyCmd::Add {
            passphrase,
            recovery,
            identity_file,
            recipient,
            recovery_key_file,
            kdf_log_n,
            write_only,
            profile_file,
            label,
        } => {
            let id = if *passphrase {
                let p = ui::new_passphrase()?;
                repo.add_key(
                    &Wrap::Passphrase(&p, *kdf_log_n),
                    Method::Passphrase,
                    "passphrase",
                )?
            } else if *recovery {
                add_recovery_key(&repo, recovery_key_file.as_deref())?;
                String::new()
            } else if let Some(f) = identity_file {
                let (r, plugin) = ui::recipients_of_identity_file(f)?;
                let (method, label) = if plugin {
                    (Method::Plugin, "age plugin identity")
                } else {
                    (Method::Identity, "identity file")
                };
                repo.add_key(&Wrap::Recipients(&r), method, label)?
            } else if *write_only {
                let f = profile_file
                    .as_deref()
                    .context("--write-only needs --profile-file")?;
                let text = repo.write_only_profile(label)?;
                ui::write_secret_file(f, &text)?;
                if !cli.quiet {
                    println!(
                        "wrote a write-only device profile to {}: use it with `vault --profile {} backup ...`",
                        f.display(),
                        f.display()
                    );
                }
                String::new()
            } else if let Some(r) = recipient {
                let r = crypto::DataRecipient::parse(r)?;
                repo.add_key(
                    &Wrap::Recipients(&crypto::KeyRecipients::x25519(&r)),
                    Method::Identity,
                    "age recipient",
                )?
            } else {
                bail!("say which method to add: --passphrase, --recovery, --identity-file or --recipient");
            };
            if !id.is_empty() && !cli.quiet {
                println!("added key {id}");
            }
        }
        KeyCmd::Remove { id } => {
            let removed = repo.remove_key(id)?;
            if !cli.quiet {
                println!("removed key {removed}; that method no longer unlocks the repository");
            }
        }
        KeyCmd::Remember => remember_device(cli, &repo)?,
        KeyCmd::VerifyRecovery | KeyCmd::ForgetDevice => {}
    }
    Ok(0)
}

fn remember_device(cli: &Cli, repo: &Repository) -> Result<()> {
    let kr = cli
        .keyring_store()
        .context("--keyring none: no store to remember the device key in")?;
    let name = cli.keyring_name(&cli.target()?, repo.store());
    let device = crypto::DataIdentity::generate();
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let id = repo.add_key(
        &Wrap::Recipients(&crypto::KeyRecipients::x25519(&device.recipient())),
        Method::Device,
        &format!("device key on {host}"),
    )?;
    let dk = vault::devicekey::DeviceKey {
        key_file: id.clone(),
        identity: device.to_secret_string(),
    };
    if let Err(e) = vault::devicekey::remember(kr, &name, &dk) {
        // Do not leave a key file nobody holds.
        let _ = repo.remove_key(&id);
        return Err(e.into());
    }
    if !cli.quiet {
        println!("this device now unlocks {} from the OS keyring (key {id}); `vault key forget-device` undoes it", repo.store().location());
    }
    Ok(())
}

fn forget_device(cli: &Cli) -> Result<u8> {
    let (store, _) = cli.store()?;
    let kr = cli
        .keyring_store()
        .context("--keyring none: no store to forget from")?;
    let name = cli.keyring_name(&cli.target()?, &store);
    let Some(dk) = vault::devicekey::recall(kr, &name)? else {
        if !cli.quiet {
            println!("this device keeps no key for {}", store.location());
        }
        return Ok(0);
    };
    // Remove the key file too, so a copy of the keyring entry unlocks nothing.
    let ids = vault::crypto::Identities::parse(&dk.identity)?;
    match Repository::unlock(store.clone(), &Unlock::Identities(&ids, "device key")) {
        Ok(repo) => {
            repo.remove_key(&dk.key_file)?;
        }
        Err(vault::Error::KeyRemoved(_) | vault::Error::WrongKey(_)) => {}
        Err(e) => return Err(e.into()),
    }
    vault::devicekey::forget(kr, &name)?;
    if !cli.quiet {
        println!(
            "forgot this device's key for {}; it will ask for the passphrase again",
            store.location()
        );
    }
    Ok(0)
}

fn verify_recovery(cli: &Cli) -> Result<u8> {
    let (store, _) = cli.store()?;
    if !Repository::exists(&store)? {
        return Err(vault::Error::NoRepository(store.location()).into());
    }
    let ids = match &cli.identity {
        Some(f) => ui::identity_file(f)?,
        None => ui::prompt_identity("Recovery key (AGE-SECRET-KEY-1...): ")?,
    };
    let repo = Repository::unlock(store, &Unlock::Identities(&ids, "recovery key"))?;
    moving::note_recovery_verified(&repo);
    if cli.json {
        json_out(&serde_json::json!({ "repository": repo.repo_id().to_hex(), "unlocks": true }))?;
    } else if !cli.quiet {
        println!(
            "the recovery key unlocks repository {}; nothing was changed",
            repo.repo_id().short()
        );
    }
    Ok(0)
}

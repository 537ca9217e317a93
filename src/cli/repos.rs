//! Which repositories a command works on and how they are opened: `--repo`, `--to` and named
//! repositories resolved through the settings file, the store built by the library from an
//! address, and unlocking (profile, identity file, this device's keyring entry, passphrase).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use vault::backend::{BackendOptions, Location, Store};
use vault::cache::CachePlace;
use vault::crypto;
use vault::repo::{InitOptions, Method, Repository, Unlock, Wrap};
use vault::settings::{Named, Settings};

use super::{Addressing, Cli, KeyringArg, Output};
use crate::ui;

/// One repository a command works on: the default one, an address, or a name from the settings
/// file (whose own settings and passphrase file take precedence over the global ones).
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) named: Named,
    /// The default repository (no --repo): created by the first backup.
    pub(crate) is_default: bool,
}

impl Target {
    /// How messages refer to it: its name, else its address.
    pub(crate) fn label(&self, store: &Store) -> String {
        self.named.name.clone().unwrap_or_else(|| store.location())
    }

    /// How it was given: its name, else its address.
    pub(crate) fn given(&self) -> String {
        self.named
            .name
            .clone()
            .unwrap_or_else(|| self.named.location.address.clone())
    }
}

/// The default repository: `~/.local/share/vault/repo`.
fn default_repo() -> Result<PathBuf> {
    let base = dirs::data_dir().context("cannot find your data folder; give --repo")?;
    Ok(base.join("vault").join("repo"))
}

/// What every command has: the global options and the output policy.
pub(crate) struct Ctx<'a> {
    pub(crate) cli: &'a Cli,
    pub(crate) out: Output,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(cli: &'a Cli) -> Self {
        Ctx {
            cli,
            out: Output::new(cli.json, cli.quiet),
        }
    }

    pub(crate) fn settings(&self) -> Result<Settings> {
        let path = Settings::default_path()
            .context("cannot find your configuration folder; set VAULT_CONFIG")?;
        Ok(Settings::load(&path)?)
    }

    /// The repository of `--repo` (a name or an address), else the default one.
    pub(crate) fn target(&self) -> Result<Target> {
        match &self.cli.repo {
            Some(r) => self.resolve(r),
            None => Ok(Target {
                named: Named::address(&default_repo()?.to_string_lossy()),
                is_default: true,
            }),
        }
    }

    /// A repository given by name (from the settings file) or by address.
    pub(crate) fn resolve(&self, r: &str) -> Result<Target> {
        if let Some(rest) = r.strip_prefix("s3:") {
            if !rest.starts_with("//") {
                bail!(
                    "{r} is not an S3 address: they start with s3:// (s3://{}), a bucket and \
                     an optional prefix",
                    rest.trim_start_matches('/')
                );
            }
        }
        let named = if vault::settings::valid_name(r) && !r.contains('/') {
            let settings = self.settings()?;
            let named = settings.locate(r);
            let names: Vec<&String> = settings.repositories().map(|(n, _)| n).collect();
            // A bare word that names nothing, where names are in use, is a typo far more often
            // than a folder in the current directory.
            if named.name.is_none() && !names.is_empty() && !Path::new(r).exists() {
                bail!(
                    "no repository named {r} (named: {}); a folder here needs a path, such \
                     as ./{r}",
                    names
                        .iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            named
        } else {
            Named::address(r)
        };
        Ok(Target {
            named,
            is_default: false,
        })
    }

    /// `--to a,b` (names or addresses); empty means every repository in the settings file.
    pub(crate) fn targets(&self, names: &[String]) -> Result<Vec<Target>> {
        if names.is_empty() {
            let all: Vec<Target> = self
                .settings()?
                .all()
                .into_iter()
                .map(|named| Target {
                    named,
                    is_default: false,
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
            if out
                .iter()
                .any(|o| o.named.location.address == t.named.location.address)
            {
                bail!("{n} is given twice");
            }
            out.push(t);
        }
        Ok(out)
    }

    /// The global backend settings (--s3-endpoint and friends), for an address whose backend
    /// takes them.
    pub(crate) fn global_options(&self, address: &str) -> Vec<(&'static str, String)> {
        let cli = self.cli;
        let mut v = Vec::new();
        let given = [
            ("endpoint", cli.s3_endpoint.clone()),
            ("region", cli.s3_region.clone()),
            (
                "addressing",
                cli.s3_addressing.map(|a| {
                    match a {
                        Addressing::Path => "path",
                        Addressing::Virtual => "virtual",
                    }
                    .to_string()
                }),
            ),
        ];
        for (k, val) in given {
            let Some(val) = val.filter(|x| !x.is_empty()) else {
                continue;
            };
            if Location::check_options(address, [k].iter()).is_ok() {
                v.push((k, val));
            }
        }
        v
    }

    /// Where `t` is: its address, with its own settings, and the global ones it lacks.
    pub(crate) fn location(&self, t: &Target) -> Location {
        let mut loc = t.named.location.clone();
        for (k, v) in self.global_options(&loc.address) {
            loc.options.entry(k.to_string()).or_insert(v);
        }
        loc.options.retain(|_, v| !v.is_empty());
        loc
    }

    /// How long a request goes on being retried: `--network-wait`, else longer for a run
    /// nobody watches (no terminal: a timer, cron) than for one somebody waits for.
    fn network_wait(&self) -> std::time::Duration {
        self.cli.network_wait.unwrap_or(
            if std::io::stderr().is_terminal() || std::io::stdin().is_terminal() {
                vault::backend::retry::DEFAULT_WINDOW
            } else {
                vault::backend::retry::UNATTENDED_WINDOW
            },
        )
    }

    pub(crate) fn store(&self) -> Result<(Store, bool)> {
        self.store_of(&self.target()?)
    }

    /// The store of `t`, and whether it is the default repository.
    pub(crate) fn store_of(&self, t: &Target) -> Result<(Store, bool)> {
        let opts = BackendOptions {
            stall: std::time::Duration::from_secs(self.cli.s3_timeout.max(1)),
            attempts: self.cli.s3_attempts.unwrap_or(u32::MAX).max(1),
            network_wait: self.network_wait(),
        };
        Ok((
            vault::backend::open(&self.location(t), &opts)?,
            t.is_default,
        ))
    }

    /// The folder of a repository on a local filesystem.
    pub(crate) fn local_path(&self, t: &Target) -> Option<PathBuf> {
        self.location(t).local_path()
    }

    pub(crate) fn open(&self) -> Result<Repository> {
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
    pub(crate) fn open_target(&self, t: &Target) -> Result<(Repository, String)> {
        let (store, _) = self.store_of(t)?;
        let label = t.label(&store);
        Ok((self.open_store(t, store)?, label))
    }

    pub(crate) fn open_store(&self, t: &Target, store: Store) -> Result<Repository> {
        Ok(self.open_store_how(t, store)?.0)
    }

    /// Open and unlock; also says whether a secret the user holds was used (a passphrase or an
    /// identity file) rather than this device's keyring entry or a write-only profile.
    pub(crate) fn open_store_how(&self, t: &Target, store: Store) -> Result<(Repository, bool)> {
        let cli = self.cli;
        let mut user_secret = false;
        if !Repository::exists(&store)? {
            return Err(vault::Error::NoRepository(store.location()).into());
        }
        let repo = if let Some(file) = &cli.profile {
            let text =
                zeroize::Zeroizing::new(std::fs::read_to_string(file).with_context(|| {
                    format!("cannot read the device profile {}", file.display())
                })?);
            Repository::open_with_material(store, vault::repo::parse_profile(&text)?)?
        } else if let Some(file) = &cli.identity {
            let ids = ui::identity_file(file)?;
            user_secret = true;
            Repository::unlock(store, &Unlock::Identities(&ids, "identity"))?
        } else if let Some(repo) = self.unlock_with_device_key(t, &store)? {
            repo
        } else {
            let file = t
                .named
                .passphrase_file
                .as_deref()
                .or(cli.password_file.as_deref());
            // Typed on a terminal: a typo gets two more tries, as sudo and ssh give.
            let mut tries_left = if ui::prompts_for_passphrase(file) {
                2
            } else {
                0
            };
            user_secret = true;
            loop {
                let pass = ui::passphrase(
                    file,
                    &format!("Passphrase for {}: ", store.location()),
                    false,
                )?;
                match Repository::open(store.clone(), &pass) {
                    Err(vault::Error::WrongPassphrase) if tries_left > 0 => {
                        tries_left -= 1;
                        eprintln!("wrong passphrase, try again");
                    }
                    r => break r?,
                }
            }
        };
        let mut repo = repo;
        repo.set_cache_place(self.cache_place());
        if let Some(f) = repo.costly_unlock() {
            self.out.warn(format!(
                "warning: the key file that opened {} asks for a scrypt work factor of 2^{f}, \
                 above vault's 2^{}: every unlock costs seconds and gigabytes of memory. If you \
                 did not choose it, someone with write access may have planted it; see `vault \
                 key list`.",
                repo.store().location(),
                vault::crypto::DEFAULT_SCRYPT_LOG_N
            ));
        }
        Ok((repo, user_secret))
    }

    /// Where restore keeps its journals (design.md §12): this user's cache folder, also with
    /// `--no-cache` (the journal is not the local index); none without a cache folder.
    pub(crate) fn journal_dir(&self) -> Option<std::path::PathBuf> {
        let base = match (&self.cli.cache_dir, CachePlace::from_env()) {
            (Some(d), _) => d.clone(),
            (None, CachePlace::Dir(d)) => d,
            (None, CachePlace::Memory) => return None,
        };
        Some(base.join(vault::restorer::JOURNAL_DIR))
    }

    pub(crate) fn cache_place(&self) -> CachePlace {
        match &self.cli.cache_dir {
            _ if self.cli.no_cache => CachePlace::Memory,
            Some(d) => CachePlace::Dir(d.clone()),
            None => CachePlace::from_env(),
        }
    }

    pub(crate) fn keyring_store(&self) -> Option<vault::devicekey::Store> {
        match self.cli.keyring {
            KeyringArg::Platform => Some(vault::devicekey::Store::Platform),
            KeyringArg::Keyutils => Some(vault::devicekey::Store::Keyutils),
            KeyringArg::None => None,
        }
    }

    /// The name under which this repository's device key is kept.
    pub(crate) fn keyring_name(&self, t: &Target, store: &Store) -> String {
        let loc = self.location(t);
        if loc.is_remote() {
            match loc.options.get("endpoint") {
                Some(e) => format!("{} at {e}", loc.address),
                None => loc.address,
            }
        } else {
            std::path::absolute(store.location())
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| store.location())
        }
    }

    /// Unlock with the device key from the OS keyring, unless a passphrase was given explicitly.
    fn unlock_with_device_key(&self, t: &Target, store: &Store) -> Result<Option<Repository>> {
        if vault::envsecrets::password().is_some()
            || self.cli.password_file.is_some()
            || t.named.passphrase_file.is_some()
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
                self.out.warn(format!(
                    "warning: {e}; asking for the passphrase (run `vault key remember` again)"
                ));
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Transfers in flight: the option, else 4 over a network and 2 for folders.
    pub(crate) fn connections(&self, t: &Target) -> usize {
        match self.cli.connections {
            Some(n) => n as usize,
            None if self.location(t).is_remote() => 4,
            None => 2,
        }
    }

    /// Create a repository in `store`, with its recovery key shown once.
    pub(crate) fn create(
        &self,
        store: Store,
        log_n: u8,
        object_lock: Option<vault::format::config::ObjectLock>,
        recovery_file: Option<&Path>,
    ) -> Result<Repository> {
        // Before anything is created: a repository whose recovery key could not be saved
        // would be left behind with an error.
        if let Some(f) = recovery_file {
            ui::check_new_secret_file(f)?;
        }
        let pass = ui::passphrase(
            self.cli.password_file.as_deref(),
            &format!("New passphrase for {}: ", store.location()),
            true,
        )?;
        ui::warn_if_short(&pass);
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
        self.out.notice(format!(
            "created repository {} at {location}",
            repo.repo_id().short()
        ));
        add_recovery_key(&repo, recovery_file, false)?;
        repo.set_cache_place(self.cache_place());
        Ok(repo)
    }

    /// Say when the local index is not where it should be, or the repository index is damaged.
    pub(crate) fn warn_index(&self, repo: &Repository) -> Result<()> {
        if let Some(why) = &repo.cache()?.fallback {
            self.out.warn(format!(
                "warning: the local index is kept in memory this run ({why})"
            ));
        }
        for (name, e) in repo.index_errors()? {
            self.out.warn(format!(
                "warning: index {} is unreadable ({e}); run `vault check`",
                name.short()
            ));
        }
        self.warn_missing_snapshots(repo);
        Ok(())
    }

    /// Say which objects had a damaged copy this run (§2.2): the other copy served, and the
    /// damage should be repaired while it still can be.
    pub(crate) fn warn_damaged(&self, repo: &Repository) {
        for d in repo.damaged_copies() {
            self.out.warn(if d.is_first() {
                format!(
                    "warning: {} is damaged in the repository ({}); its second copy was used and \
                     nothing is lost. Run `vault repair metadata` to rewrite it.",
                    d.what(),
                    ui::safe(&d.error)
                )
            } else {
                format!(
                    "warning: both copies of {} in the repository are damaged ({}); this \
                     computer's local index still holds it. Run `vault repair metadata` now to \
                     write it again.",
                    d.what(),
                    ui::safe(&d.error)
                )
            });
        }
    }

    /// Say which newer snapshots `latest` did not take (§11).
    pub(crate) fn warn_passed_over(&self, passed: &[vault::snapshots::PassedOver]) {
        use vault::snapshots::PassedOver;
        for p in passed {
            self.out.warn(match p {
                PassedOver::Unreadable(id, e) => format!(
                    "warning: snapshot {} could not be read ({e}); `latest` is the newest \
                     readable one. Run `vault check`.",
                    id.short()
                ),
                PassedOver::WriteOnly(id) => format!(
                    "note: snapshot {} is newer but was written by a write-only device; `latest` \
                     is the newest from a full device. Name it by its id to use it.",
                    id.short()
                ),
                PassedOver::Future(id, t) => format!(
                    "warning: snapshot {} is dated {} UTC, in the future; `latest` passed over it. \
                     A device with a wrong clock, or someone forging snapshots, wrote it.",
                    id.short(),
                    crate::ui::time(*t)
                ),
            });
        }
    }

    pub(crate) fn warn_missing_snapshots(&self, repo: &Repository) {
        let missing = repo.missing_snapshots();
        if missing.is_empty() {
            return;
        }
        let ids: Vec<String> = missing.iter().map(|id| id.short()).collect();
        self.out.warn(format!(
            "warning: {} snapshot(s) missing from the repository: {}. This computer saw them, or \
             later snapshots were made after them, and no `vault forget` removed them: someone \
             deleted them, or the storage was rolled back to an older state. Check who can write \
             to it and run `vault check`; once you know why, `vault snapshots \
             --acknowledge-missing` stops this warning on this computer.",
            ids.len(),
            ids.join(", ")
        ));
    }
}

/// Generate a recovery key, add it as a key file, and show it once, on the terminal: with
/// `file`, also saved there. With neither a terminal nor a file the key is not made (shown to a
/// log or a pipe, it would be lost, or read by whoever reads the log): `required` makes that an
/// error (`key add --recovery`), else it is said and the run goes on (`init`, a first backup).
pub(crate) fn add_recovery_key(
    repo: &Repository,
    file: Option<&Path>,
    required: bool,
) -> Result<()> {
    if let Some(f) = file {
        ui::check_new_secret_file(f)?;
    }
    let terminal = std::io::stderr().is_terminal();
    if file.is_none() && !terminal {
        if required {
            bail!(
                "there is no terminal to show a recovery key on: run it on a terminal, or pass \
                 --recovery-key-file FILE"
            );
        }
        eprintln!(
            "no recovery key was made: there is no terminal to show it on. Make one with \
             `vault key add --recovery` on a terminal, or `vault key add --recovery \
             --recovery-key-file FILE`."
        );
        return Ok(());
    }
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
    if !terminal {
        // Saved to the file; its text stays out of whatever stderr goes to.
        eprintln!(
            "RECOVERY KEY (key {id}) for repository {} saved to {}. Keep a copy away from this \
             computer: with it you can read your backups if you forget the passphrase \
             (`--identity FILE`).",
            repo.repo_id().short(),
            file.map(|f| f.display().to_string()).unwrap_or_default()
        );
        return Ok(());
    }
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
    if std::io::stdin().is_terminal() {
        confirm_saved(&secret);
    }
    Ok(())
}

/// Wait until the user shows they wrote the recovery key down: the run does not go on (a backup
/// scrolling it away) until they type its last four characters, or end the input.
fn confirm_saved(secret: &str) {
    let tail: String = secret
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    loop {
        eprint!("\nType the last 4 characters of the recovery key to confirm you saved it: ");
        let mut line = String::new();
        match std::io::stdin().read_line(&mut line) {
            Ok(0) | Err(_) => {
                eprintln!(
                    "\nnot confirmed: if you did not save it, make a new one with \
                     `vault key add --recovery` and remove this one with `vault key remove`."
                );
                return;
            }
            Ok(_) if line.trim().eq_ignore_ascii_case(&tail) => {
                eprintln!("confirmed.");
                return;
            }
            Ok(_) => eprintln!("that is not how the key ends; look at it again above."),
        }
    }
}

/// Where `key verify-recovery` notes that a repository's recovery path was proven on this
/// computer (the file holds nothing secret: the time of the check).
pub(crate) fn recovery_record(repo: &Repository) -> Option<PathBuf> {
    dirs::data_dir().map(|d| {
        d.join("vault")
            .join("recovery-verified")
            .join(repo.repo_id().to_hex())
    })
}

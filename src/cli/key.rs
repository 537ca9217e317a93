//! `vault key`: the ways to unlock a repository (passphrases, recovery keys, identity files,
//! write-only profiles) and this device's key in the OS keyring.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use vault::crypto;
use vault::repo::{Method, Repository, Unlock, Wrap};

use super::repos::{add_recovery_key, recovery_record};
use super::Ctx;
use crate::ui;

#[derive(clap::Subcommand)]
pub(crate) enum Cmd {
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

pub(crate) fn run(ctx: &Ctx<'_>, cmd: &Cmd) -> Result<u8> {
    match cmd {
        Cmd::VerifyRecovery => return verify_recovery(ctx),
        Cmd::ForgetDevice => return forget_device(ctx),
        _ => {}
    }
    let repo = ctx.open()?;
    match cmd {
        Cmd::List => {
            let keys = repo.key_files()?;
            ctx.out.result(&keys, || {
                for k in &keys {
                    println!(
                        "{}  {:<13}{}",
                        k.id,
                        k.kind,
                        if k.current { "  (used now)" } else { "" }
                    );
                }
                Ok(())
            })?;
        }
        Cmd::Add {
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
                ui::warn_if_short(&p);
                repo.add_key(
                    &Wrap::Passphrase(&p, *kdf_log_n),
                    Method::Passphrase,
                    "passphrase",
                )?
            } else if *recovery {
                add_recovery_key(&repo, recovery_key_file.as_deref(), true)?;
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
                ctx.out.tell(format!(
                    "wrote a write-only device profile to {}: use it with `vault --profile {} \
                     backup ...`",
                    f.display(),
                    f.display()
                ));
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
            if !id.is_empty() {
                ctx.out.tell(format!("added key {id}"));
            }
        }
        Cmd::Remove { id } => {
            let removed = repo.remove_key(id)?;
            ctx.out.tell(format!(
                "removed key {removed}; that method no longer unlocks the repository"
            ));
        }
        Cmd::Remember => remember_device(ctx, &repo)?,
        Cmd::VerifyRecovery | Cmd::ForgetDevice => {}
    }
    Ok(0)
}

fn remember_device(ctx: &Ctx<'_>, repo: &Repository) -> Result<()> {
    let kr = ctx
        .keyring_store()
        .context("--keyring none: no store to remember the device key in")?;
    let name = ctx.keyring_name(&ctx.target()?, repo.store());
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
    ctx.out.tell(format!(
        "this device now unlocks {} from the OS keyring (key {id}); `vault key forget-device` \
         undoes it",
        repo.store().location()
    ));
    Ok(())
}

fn forget_device(ctx: &Ctx<'_>) -> Result<u8> {
    let (store, _) = ctx.store()?;
    let kr = ctx
        .keyring_store()
        .context("--keyring none: no store to forget from")?;
    let name = ctx.keyring_name(&ctx.target()?, &store);
    let Some(dk) = vault::devicekey::recall(kr, &name)? else {
        ctx.out
            .tell(format!("this device keeps no key for {}", store.location()));
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
    ctx.out.tell(format!(
        "forgot this device's key for {}; it will ask for the passphrase again",
        store.location()
    ));
    Ok(0)
}

fn verify_recovery(ctx: &Ctx<'_>) -> Result<u8> {
    let (store, _) = ctx.store()?;
    if !Repository::exists(&store)? {
        return Err(vault::Error::NoRepository(store.location()).into());
    }
    let ids = match &ctx.cli.identity {
        Some(f) => ui::identity_file(f)?,
        None => ui::prompt_identity("Recovery key (AGE-SECRET-KEY-1...): ")?,
    };
    let repo = Repository::unlock(store, &Unlock::Identities(&ids, "recovery key"))?;
    note_recovery_verified(ctx, &repo);
    ctx.out.result(
        &serde_json::json!({ "repository": repo.repo_id().to_hex(), "unlocks": true }),
        || {
            println!(
                "the recovery key unlocks repository {}; nothing was changed",
                repo.repo_id().short()
            );
            Ok(())
        },
    )?;
    Ok(0)
}

/// Note that the recovery key of `repo` was proven on this computer (`vault move` asks).
fn note_recovery_verified(ctx: &Ctx<'_>, repo: &Repository) {
    let Some(p) = recovery_record(repo) else {
        return;
    };
    let r = p
        .parent()
        .map(std::fs::create_dir_all)
        .unwrap_or(Ok(()))
        .and_then(|_| std::fs::write(&p, format!("{}\n", ui::time(now_secs()))));
    if let Err(e) = r {
        ctx.out.warn(format!(
            "warning: cannot note the check in {}: {e}; `vault move` will ask for the passphrase",
            p.display()
        ));
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

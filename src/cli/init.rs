//! `vault init`: create a repository, with its recovery key shown once.

use std::path::PathBuf;

use anyhow::Result;
use vault::crypto;
use vault::format::config::{LockMode, ObjectLock};

use super::{Ctx, LockModeArg};

#[derive(clap::Args)]
pub(crate) struct Args {
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
}

pub(crate) fn run(ctx: &Ctx<'_>, a: &Args) -> Result<u8> {
    let lock = a.object_lock_days.map(|days| ObjectLock {
        days,
        mode: match a.object_lock_mode {
            LockModeArg::Governance => LockMode::Governance,
            LockModeArg::Compliance => LockMode::Compliance,
        },
    });
    let (store, _) = ctx.store()?;
    let repo = ctx.create(store, a.kdf_log_n, lock, a.recovery_key_file.as_deref())?;
    ctx.out.json(&serde_json::json!({
        "repository": repo.repo_id().to_hex(),
        "location": repo.store().location(),
    }))?;
    Ok(0)
}

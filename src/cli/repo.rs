//! `vault repo add/list/remove`: names for repositories (an external drive, a bucket) in the
//! settings file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use vault::backend::Location;
use vault::repo::Repository;
use vault::settings::{Named, RepoEntry};

use super::{Ctx, Target};

#[derive(clap::Subcommand)]
pub(crate) enum Cmd {
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

pub(crate) fn run(ctx: &Ctx<'_>, cmd: &Cmd) -> Result<u8> {
    let mut settings = ctx.settings()?;
    match cmd {
        Cmd::Add {
            name,
            address,
            passphrase_file,
        } => {
            let loc = Location::new(address.as_str());
            // Refuses an address no backend takes.
            Location::check_options(address, std::iter::empty::<&str>())?;
            let address = match loc.local_path() {
                // A relative folder would mean something else from another working folder.
                Some(p) => std::path::absolute(&p)
                    .with_context(|| format!("cannot resolve {address}"))?
                    .to_string_lossy()
                    .into_owned(),
                None => address.clone(),
            };
            let entry = RepoEntry {
                options: ctx
                    .global_options(&address)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                address,
                passphrase_file: passphrase_file
                    .as_ref()
                    .map(std::path::absolute)
                    .transpose()?,
            };
            settings.add(name, entry.clone())?;
            settings.save()?;
            ctx.out.tell(format!("{name} = {}", entry.address));
            let t = Target {
                named: Named {
                    name: Some(name.clone()),
                    location: Location {
                        address: entry.address.clone(),
                        options: entry.options.clone(),
                    },
                    passphrase_file: entry.passphrase_file.clone(),
                },
                is_default: false,
            };
            match ctx
                .store_of(&t)
                .and_then(|(s, _)| Ok(Repository::exists(&s)?))
            {
                Ok(true) => {}
                Ok(false) => ctx.out.tell(format!(
                    "there is no repository there yet: create it with `vault --repo {name} init`"
                )),
                // A bucket that does not exist yet is a repository not made yet, not a fault.
                Err(e) if format!("{e:#}").contains("does not exist") => ctx.out.tell(format!(
                    "there is no repository there yet (nor its bucket): create both with \
                     `vault --repo {name} init`"
                )),
                Err(e) => ctx
                    .out
                    .notice(format!("warning: cannot reach it now: {e:#}")),
            }
        }
        Cmd::List => {
            let v: BTreeMap<&String, &RepoEntry> = settings.repositories().collect();
            ctx.out.result(&v, || {
                for (n, e) in settings.repositories() {
                    let extra = e
                        .options
                        .get("endpoint")
                        .map(|x| format!("  (endpoint {x})"))
                        .unwrap_or_default();
                    println!("{n:<12} {}{extra}", e.address);
                }
                if settings.repositories().next().is_none() {
                    println!(
                        "no named repositories in {}; add one with `vault repo add NAME REPO`",
                        settings.path().display()
                    );
                }
                Ok(())
            })?;
        }
        Cmd::Remove { name } => {
            let e = settings.remove(name)?;
            settings.save()?;
            ctx.out.tell(format!(
                "forgot the name {name}; the repository at {} is untouched",
                e.address
            ));
        }
    }
    Ok(0)
}

//! Secrets given in the environment (the passphrase, S3 keys), taken out of it at start-up so
//! that no child process vault starts (an age plugin for a hardware key) inherits them.

use std::sync::OnceLock;

use zeroize::Zeroizing;

/// S3 credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
/// No `Debug`.
pub struct AwsKeys {
    pub id: String,
    pub secret: Zeroizing<String>,
    pub token: Option<Zeroizing<String>>,
}

/// What was taken. No `Debug`.
struct Taken {
    password: Option<Zeroizing<String>>,
    aws: Option<AwsKeys>,
}

static TAKEN: OnceLock<Taken> = OnceLock::new();

const PASSWORD: &str = "VAULT_PASSWORD";
const AWS_ID: &str = "AWS_ACCESS_KEY_ID";
const AWS_SECRET: &str = "AWS_SECRET_ACCESS_KEY";
const AWS_TOKEN: &str = "AWS_SESSION_TOKEN";

/// Move the secrets from the environment into this process's memory. Call it first thing in
/// `main`, before any thread starts: changing the environment while another thread reads it is
/// not safe.
pub fn take_from_environment() {
    let take = |k: &str| {
        let v = std::env::var(k).ok().map(Zeroizing::new);
        std::env::remove_var(k);
        v
    };
    let password = take(PASSWORD);
    let id = take(AWS_ID).map(|v| v.to_string());
    let secret = take(AWS_SECRET);
    let token = take(AWS_TOKEN);
    let aws = match (id, secret) {
        (Some(id), Some(secret)) => Some(AwsKeys { id, secret, token }),
        _ => None,
    };
    let _ = TAKEN.set(Taken { password, aws });
}

/// The passphrase from `VAULT_PASSWORD`, taken at start-up (or read now, in a program that did
/// not take it, such as a test).
pub fn password() -> Option<Zeroizing<String>> {
    match TAKEN.get() {
        Some(t) => t.password.clone(),
        None => std::env::var(PASSWORD).ok().map(Zeroizing::new),
    }
}

/// S3 keys taken from the environment at start-up; `None` when none were there, or when they
/// were not taken (the S3 SDK then looks for them itself).
pub fn aws() -> Option<&'static AwsKeys> {
    TAKEN.get().and_then(|t| t.aws.as_ref())
}

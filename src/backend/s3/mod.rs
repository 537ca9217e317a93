//! S3-compatible backend (AWS, MinIO, Garage, SeaweedFS, B2, R2, Wasabi...) on aws-sdk-s3:
//! path-style addressing for custom endpoints, checksums only where required (what S3 clones
//! accept) plus a signed Content-MD5 so the server verifies every upload (the one hash of the
//! body: payloads are not signed, see `put_single`), create-only PUTs whose ambiguous outcomes
//! are resolved by comparing content, multipart uploads for large objects (their parts retried
//! here, one by one), and optional Object Lock retention. Each call is one attempt: `open` stacks
//! the retry wrapper (full-jitter exponential backoff) and the meter on top.

use bytes::Bytes;
use std::error::Error as StdError;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
    ObjectLockEnabled, ObjectLockMode,
};
use aws_sdk_s3::Client;
use base64::Engine;
use md5::{Digest, Md5};

use super::open::{BackendOptions, Location};
use super::retry::RetryPolicy;
use super::{object_path, short_name, valid_name, Backend, Counters, FileType, Listed};
use crate::error::{Error, Result};
use crate::format::config::{LockMode, ObjectLock};

mod errors;
mod stall;
mod upload;

use errors::{classify, root_cause, status_of, Failure};
use stall::Stall;

/// Objects larger than this are uploaded in parts.
pub const MULTIPART_THRESHOLD: usize = 64 << 20;
/// Part size of multipart uploads.
pub const PART_SIZE: usize = 16 << 20;

/// Where and how to reach the bucket.
#[derive(Clone, Debug)]
pub struct S3Options {
    pub bucket: String,
    pub prefix: String,
    /// Custom endpoint (MinIO, Garage, ...); `None` for AWS (or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Path-style addressing; `None` chooses path style exactly when a custom endpoint is given.
    pub path_style: Option<bool>,
    /// A request is abandoned (and retried) when no byte has moved for this long.
    pub stall: Duration,
    /// Attempts per request before giving up (1 = no retries).
    pub max_attempts: u32,
    /// How long a request goes on being retried once the server has answered (§2.1).
    pub window: Duration,
}

/// No byte moving for this long is a stalled connection: abandoned and retried.
pub const DEFAULT_STALL: Duration = Duration::from_secs(30);

impl S3Options {
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.max_attempts,
            window: self.window,
            ..RetryPolicy::default()
        }
    }
}

impl S3Options {
    /// Parse `s3://bucket[/prefix]`.
    pub fn parse(url: &str) -> Result<S3Options> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| Error::Invalid(format!("not an s3:// address: {url}")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid_bucket {
            return Err(Error::Invalid(format!(
                "{bucket:?} is not a valid bucket name (3 to 63 lower-case letters, digits, '-' or '.')"
            )));
        }
        Ok(S3Options {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: None,
            region: None,
            path_style: None,
            stall: DEFAULT_STALL,
            max_attempts: u32::MAX,
            window: super::retry::DEFAULT_WINDOW,
        })
    }
}

pub struct S3Backend {
    opts: S3Options,
    client: OnceLock<Client>,
    lock: Mutex<Option<ObjectLock>>,
    /// The store's meter, for the requests beyond the one per call it counts itself.
    meter: OnceLock<Arc<Counters>>,
}

/// Settings a repository's S3 address may carry (in the settings file, or from the command line).
pub const OPTIONS: &[&str] = &["endpoint", "region", "addressing"];

/// The backend of an `s3://bucket/prefix` location, and its retry policy.
pub fn open(loc: &Location, opts: &BackendOptions) -> Result<super::open::Opened> {
    let mut o = S3Options::parse(&loc.address)?;
    let get = |k: &str| loc.options.get(k).filter(|v| !v.is_empty()).cloned();
    o.endpoint = get("endpoint");
    o.region = get("region");
    o.path_style = match get("addressing").as_deref() {
        Some("path") => Some(true),
        Some("virtual") => Some(false),
        Some(other) => {
            return Err(Error::Invalid(format!(
                "S3 addressing {other:?}: use path or virtual"
            )))
        }
        None => None,
    };
    o.stall = opts.stall.max(Duration::from_secs(1));
    o.max_attempts = opts.attempts.max(1);
    o.window = opts.network_wait;
    let policy = o.retry_policy();
    Ok((Arc::new(S3Backend::new(o)), Some(policy)))
}

impl S3Backend {
    async fn put_payload(&self, t: FileType, name: &str, data: upload::Payload) -> Result<()> {
        let key = self.key(t, name);
        let r = if data.len() > MULTIPART_THRESHOLD as u64 {
            self.put_multipart(&key, data).await
        } else {
            self.put_single(&key, data).await
        };
        r.map_err(|f| self.fail(&format!("storing {} {}", t.name(), short_name(name)), f))
    }

    pub fn new(opts: S3Options) -> Self {
        S3Backend {
            opts,
            client: OnceLock::new(),
            lock: Mutex::new(None),
            meter: OnceLock::new(),
        }
    }

    fn endpoint_name(&self) -> String {
        self.opts
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .unwrap_or_else(|| "AWS S3".to_string())
    }

    async fn client(&self) -> &Client {
        if let Some(c) = self.client.get() {
            return c;
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(r) = &self.opts.region {
            loader = loader.region(Region::new(r.clone()));
        }
        // Keys that vault took out of its environment at start-up (so that child processes
        // do not inherit them) are handed to the SDK here.
        if let Some(k) = crate::envsecrets::aws() {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                k.id.clone(),
                k.secret.to_string(),
                k.token.as_ref().map(|t| t.to_string()),
                None,
                "environment",
            ));
        }
        let sdk = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&sdk)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // Retries are ours: counted, jittered, and aware of create-only semantics.
            .retry_config(RetryConfig::disabled())
            // No total per attempt: a large part on a slow uplink may take minutes while bytes
            // move; a connection where nothing moves is caught by the stall time (`stall.rs`).
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .build(),
            );
        if sdk.region().is_none() {
            b = b.region(Region::new("us-east-1"));
        }
        let endpoint = self
            .opts
            .endpoint
            .clone()
            .or_else(|| sdk.endpoint_url().map(str::to_string));
        if let Some(e) = &self.opts.endpoint {
            b = b.endpoint_url(e);
        }
        b = b.force_path_style(self.opts.path_style.unwrap_or(endpoint.is_some()));
        let _ = self.client.set(Client::from_conf(b.build()));
        self.client.get().expect("client was just set")
    }

    fn key(&self, t: FileType, name: &str) -> String {
        let p = object_path(t, name);
        if self.opts.prefix.is_empty() {
            p
        } else {
            format!("{}/{p}", self.opts.prefix)
        }
    }

    fn dir_prefix(&self, t: FileType) -> String {
        if self.opts.prefix.is_empty() {
            format!("{}/", t.dir())
        } else {
            format!("{}/{}/", self.opts.prefix, t.dir())
        }
    }

    fn fail(&self, what: &str, f: Failure) -> Error {
        let msg = if f.code.as_deref() == Some("NoSuchBucket") {
            format!(
                "the bucket {} does not exist (`vault init` creates it, with the repository)",
                self.opts.bucket
            )
        } else {
            f.message
        };
        let cause = std::io::Error::other(msg);
        if f.retry {
            Error::transient(what, cause)
        } else {
            Error::storage(what, cause)
        }
    }

    /// The failure of a request abandoned because nothing moved for the stall time (retried).
    fn stalled(&self) -> Failure {
        Failure {
            retry: true,
            status: None,
            code: None,
            message: format!(
                "the S3 endpoint {} stalled: nothing moved for {} s",
                self.endpoint_name(),
                self.opts.stall.as_secs()
            ),
        }
    }

    /// Count a request beyond the one the store's meter counts for the call.
    fn extra(&self, kind: impl Fn(&Counters) -> &AtomicU64) {
        if let Some(m) = self.meter.get() {
            m.count(kind(m));
        }
    }

    /// The policy for requests this backend retries itself (the parts of a multipart upload,
    /// so that one failed part does not send the whole object again).
    fn part_retries(&self) -> RetryPolicy {
        self.opts.retry_policy()
    }

    fn lock_headers(&self) -> Option<(ObjectLockMode, DateTime)> {
        let lock = (*self.lock.lock().unwrap_or_else(|p| p.into_inner()))?;
        let until = std::time::SystemTime::now() + Duration::from_secs(lock.days as u64 * 86_400);
        let mode = match lock.mode {
            LockMode::Governance => ObjectLockMode::Governance,
            LockMode::Compliance => ObjectLockMode::Compliance,
        };
        Some((mode, DateTime::from(until)))
    }

    /// One object or range of it, at most `max` bytes: a server that announces or sends more
    /// (a range answered with the whole object, an object planted to exhaust memory) is
    /// refused before the rest is read.
    async fn get_inner(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
        max: u64,
    ) -> std::result::Result<Vec<u8>, Failure> {
        let client = self.client().await;
        let endpoint = self.endpoint_name();
        let mut req = client.get_object().bucket(&self.opts.bucket).key(key);
        if let Some((off, len)) = range {
            if len == 0 {
                return Ok(Vec::new());
            }
            req = req.range(format!("bytes={}-{}", off, off.saturating_add(len - 1)));
        }
        let mut resp = req
            .send()
            .stall(self.opts.stall)
            .await
            .map_err(|e| classify(&e, &endpoint))?;
        let announced = resp.content_length().unwrap_or(0).max(0) as u64;
        if announced > max {
            return Err(too_large_failure(announced, max));
        }
        let mut out = Vec::with_capacity(announced as usize);
        let watch = stall::Watch::new();
        while let Some(chunk) = watch
            .within(self.opts.stall, resp.body.next())
            .await
            .ok_or_else(|| self.stalled())?
        {
            watch.touch();
            let chunk = chunk.map_err(|e| Failure {
                retry: true,
                status: None,
                code: None,
                message: format!("download interrupted: {}", root_cause(&e)),
            })?;
            if (out.len() + chunk.len()) as u64 > max {
                return Err(too_large_failure((out.len() + chunk.len()) as u64, max));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// Our own code for an answer larger than asked for or allowed (never retried).
const TOO_LARGE: &str = "vault:TooLarge";

fn too_large_failure(len: u64, max: u64) -> Failure {
    Failure {
        retry: false,
        status: None,
        code: Some(TOO_LARGE.into()),
        message: format!("the storage sent {len} bytes or more, more than the {max} asked for"),
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn location(&self) -> String {
        if self.opts.prefix.is_empty() {
            format!("s3://{}", self.opts.bucket)
        } else {
            format!("s3://{}/{}", self.opts.bucket, self.opts.prefix)
        }
    }

    fn attach_meter(&self, meter: Arc<Counters>) {
        let _ = self.meter.set(meter);
    }

    fn set_object_lock(&self, lock: Option<ObjectLock>) -> Result<()> {
        *self.lock.lock().unwrap_or_else(|p| p.into_inner()) = lock;
        Ok(())
    }

    async fn create(&self) -> Result<()> {
        // The meter counts no request for `create`: every one is counted here.
        let client = self.client().await;
        let endpoint = self.endpoint_name();
        let lock = *self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.extra(|m| &m.head);
        match client
            .head_bucket()
            .bucket(&self.opts.bucket)
            .send()
            .stall(self.opts.stall)
            .await
        {
            Ok(_) => {
                if lock.is_some() {
                    self.extra(|m| &m.get);
                    let cfg = client
                        .get_object_lock_configuration()
                        .bucket(&self.opts.bucket)
                        .send()
                        .stall(self.opts.stall)
                        .await;
                    let enabled = matches!(&cfg, Ok(c) if c.object_lock_configuration()
                        .and_then(|c| c.object_lock_enabled()) == Some(&ObjectLockEnabled::Enabled));
                    if !enabled {
                        return Err(Error::Invalid(format!(
                            "bucket {} does not have Object Lock enabled; Object Lock can only be turned on when a bucket is created (let `vault init` create a new bucket, or use one created with Object Lock)",
                            self.opts.bucket
                        )));
                    }
                }
                self.ensure_empty_prefix().await
            }
            Err(e) if status_of(&e) == Some(404) => {
                self.extra(|m| &m.put);
                let region = client
                    .config()
                    .region()
                    .map(|r| r.to_string())
                    .unwrap_or_default();
                let mut req = client.create_bucket().bucket(&self.opts.bucket);
                if lock.is_some() {
                    req = req.object_lock_enabled_for_bucket(true);
                }
                if !region.is_empty() && region != "us-east-1" {
                    req = req.create_bucket_configuration(
                        CreateBucketConfiguration::builder()
                            .location_constraint(BucketLocationConstraint::from(region.as_str()))
                            .build(),
                    );
                }
                match req.send().stall(self.opts.stall).await {
                    Ok(_) => Ok(()),
                    Err(e) => match classify(&e, &endpoint) {
                        // Another client (another repository prefix) created it meanwhile.
                        f if f.code.as_deref() == Some("BucketAlreadyOwnedByYou") => Ok(()),
                        f => Err(self.fail(&format!("creating bucket {}", self.opts.bucket), f)),
                    },
                }
            }
            Err(e) => Err(self.fail(
                &format!("bucket {}", self.opts.bucket),
                classify(&e, &endpoint),
            )),
        }
    }

    async fn put(&self, t: FileType, name: &str, data: Bytes) -> Result<()> {
        self.put_payload(t, name, upload::Payload::Memory(data))
            .await
    }

    fn spools(&self) -> bool {
        true
    }

    async fn put_spooled(
        &self,
        t: FileType,
        name: &str,
        data: crate::backend::spool::Spooled,
    ) -> Result<()> {
        self.put_payload(t, name, upload::Payload::Spooled(data))
            .await
    }

    async fn get(&self, t: FileType, name: &str, max: u64) -> Result<Vec<u8>> {
        let key = self.key(t, name);
        self.get_inner(&key, None, max)
            .await
            .map_err(|f| self.not_found_or(t, name, f))
    }

    async fn get_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let key = self.key(t, name);
        self.get_inner(&key, Some((offset, len)), len)
            .await
            .map_err(|f| self.not_found_or(t, name, f))
    }

    async fn get_range_stream(
        &self,
        t: FileType,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<super::Chunks> {
        // Four frames ahead of the reader: hyper's frames are slices of read buffers of up to
        // a few hundred KiB each, and 16 held per stream, over six streams, kept 30 to 50 MB
        // of them alive in a restore, with no gain in speed (docs/benchmarks.md).
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        if len == 0 {
            return Ok(super::Chunks::new(rx));
        }
        let key = self.key(t, name);
        let client = self.client().await;
        let endpoint = self.endpoint_name();
        let resp = client
            .get_object()
            .bucket(&self.opts.bucket)
            .key(&key)
            .range(format!(
                "bytes={}-{}",
                offset,
                offset.saturating_add(len - 1)
            ))
            .send()
            .stall(self.opts.stall)
            .await
            .map_err(|e| self.not_found_or(t, name, classify(&e, &endpoint)))?;
        let announced = resp.content_length().unwrap_or(0).max(0) as u64;
        if announced > len {
            return Err(self.not_found_or(t, name, too_large_failure(announced, len)));
        }
        let stall = self.opts.stall;
        let what = format!("reading {} {}", t.name(), short_name(name));
        let stalled = self.stalled().message;
        let mut body = resp.body;
        tokio::spawn(async move {
            let watch = stall::Watch::new();
            let mut got = 0u64;
            loop {
                let item = match watch.within(stall, body.next()).await {
                    None => Err(Error::transient(
                        &what,
                        std::io::Error::other(stalled.clone()),
                    )),
                    Some(None) => return,
                    Some(Some(Err(e))) => Err(Error::transient(
                        &what,
                        std::io::Error::other(format!("download interrupted: {}", root_cause(&e))),
                    )),
                    Some(Some(Ok(b))) => {
                        got += b.len() as u64;
                        if got > len {
                            Err(Error::corrupt(
                                &what,
                                "the storage sent more than asked for",
                            ))
                        } else {
                            Ok(b)
                        }
                    }
                };
                let last = item.is_err();
                if tx.send(item).await.is_err() || last {
                    return;
                }
                // Time spent waiting for the reader is not the network's.
                watch.touch();
            }
        });
        Ok(super::Chunks::new(rx))
    }

    async fn list(&self, t: FileType) -> Result<Vec<Listed>> {
        let client = self.client().await;
        let endpoint = self.endpoint_name();
        let prefix = self.dir_prefix(t);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            if token.is_some() {
                // A page after the first: the meter counted one request for the call.
                self.extra(|m| &m.list);
            }
            let page = client
                .list_objects_v2()
                .bucket(&self.opts.bucket)
                .prefix(&prefix)
                .set_continuation_token(token.clone())
                .send()
                .stall(self.opts.stall)
                .await
                .map_err(|e| {
                    self.fail(&format!("listing {}", t.name()), classify(&e, &endpoint))
                })?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                let name = key.rsplit('/').next().unwrap_or_default();
                if valid_name(name) {
                    out.push(Listed {
                        name: name.to_string(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        modified: o.last_modified().map_or(0, |t| t.secs()),
                    });
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn stat(&self, t: FileType, name: &str) -> Result<Option<u64>> {
        let client = self.client().await;
        let endpoint = self.endpoint_name();
        let key = self.key(t, name);
        let r = match client
            .head_object()
            .bucket(&self.opts.bucket)
            .key(&key)
            .send()
            .stall(self.opts.stall)
            .await
        {
            Ok(o) => Ok(Some(o.content_length().unwrap_or(0).max(0) as u64)),
            // HEAD answers carry no error code: ask once more with a ranged GET, whose
            // answer tells a missing key from a missing bucket or a bad signature.
            Err(e) if matches!(status_of(&e), Some(403 | 404)) => {
                self.extra(|m| &m.get);
                match client
                    .get_object()
                    .bucket(&self.opts.bucket)
                    .key(&key)
                    .range("bytes=0-0")
                    .send()
                    .stall(self.opts.stall)
                    .await
                {
                    Ok(_) => Err(classify(&e, &endpoint)),
                    Err(g) => {
                        let f = classify(&g, &endpoint);
                        match f.code.as_deref() {
                            Some("NoSuchKey") => Ok(None),
                            None if f.status == Some(404) => Ok(None),
                            _ => Err(f),
                        }
                    }
                }
            }
            Err(e) => Err(classify(&e, &endpoint)),
        };
        let what = if t == FileType::Marker {
            "opening the repository".to_string()
        } else {
            format!("checking {}", t.name())
        };
        r.map_err(|f| self.fail(&what, f))
    }

    async fn delete(&self, t: FileType, name: &str) -> Result<()> {
        let client = self.client().await;
        let endpoint = self.endpoint_name();
        let key = self.key(t, name);
        client
            .delete_object()
            .bucket(&self.opts.bucket)
            .key(&key)
            .send()
            .stall(self.opts.stall)
            .await
            .map(|_| ())
            .map_err(|e| {
                self.fail(
                    &format!("deleting {} {}", t.name(), short_name(name)),
                    classify(&e, &endpoint),
                )
            })
    }
}

impl S3Backend {
    /// A new repository needs a prefix holding nothing but (possibly) an unfinished repository.
    async fn ensure_empty_prefix(&self) -> Result<()> {
        let client = self.client().await;
        let endpoint = self.endpoint_name();
        let prefix = if self.opts.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.opts.prefix)
        };
        self.extra(|m| &m.list);
        let page = client
            .list_objects_v2()
            .bucket(&self.opts.bucket)
            .prefix(&prefix)
            .max_keys(50)
            .send()
            .stall(self.opts.stall)
            .await
            .map_err(|e| self.fail("listing the bucket", classify(&e, &endpoint)))?;
        let ours = [
            "keys/",
            "data/",
            "index/",
            "snapshots/",
            "revoked/",
            "config",
            "VAULT",
        ];
        let foreign = page.contents().iter().filter_map(|o| o.key()).any(|k| {
            let rel = &k[prefix.len().min(k.len())..];
            !ours.iter().any(|o| rel.starts_with(o))
        });
        if foreign {
            return Err(Error::Invalid(format!(
                "{} already holds other objects; a new repository needs an empty bucket or prefix",
                self.location()
            )));
        }
        Ok(())
    }

    fn not_found_or(&self, t: FileType, name: &str, f: Failure) -> Error {
        if f.code.as_deref() == Some(TOO_LARGE) {
            return Error::corrupt(format!("{} {}", t.name(), short_name(name)), f.message);
        }
        if f.status == Some(404) && f.code.as_deref() != Some("NoSuchBucket") {
            Error::NotFound(super::object_label(t, name))
        } else {
            self.fail(&format!("reading {} {}", t.name(), short_name(name)), f)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let o = S3Options::parse("s3://my-bucket/some/prefix/").unwrap();
        assert_eq!(o.bucket, "my-bucket");
        assert_eq!(o.prefix, "some/prefix");
        assert_eq!(S3Options::parse("s3://bkt").unwrap().prefix, "");
        assert!(S3Options::parse("s3://B").is_err());
        assert!(S3Options::parse("/tmp/x").is_err());
    }
}

//! Uploads to S3: one create-only PUT with a signed Content-MD5 for an ordinary object, and a
//! multipart upload (each part retried here) for a large one.

use super::*;
use crate::backend::spool::Spooled;

/// What an upload sends: a buffer, or a pack spooled to a file (see `backend::spool`).
#[derive(Clone)]
pub(super) enum Payload {
    Memory(Bytes),
    Spooled(Spooled),
}

fn spool_failure(e: std::io::Error) -> Failure {
    Failure {
        retry: false,
        status: None,
        code: None,
        message: format!("reading the upload spool: {e}"),
    }
}

impl Payload {
    pub(super) fn len(&self) -> u64 {
        match self {
            Payload::Memory(b) => b.len() as u64,
            Payload::Spooled(s) => s.len(),
        }
    }

    /// Bytes `start..end`, without a copy.
    fn part(&self, start: u64, end: u64) -> Payload {
        match self {
            Payload::Memory(b) => Payload::Memory(b.slice(start as usize..end as usize)),
            Payload::Spooled(s) => Payload::Spooled(s.slice(start, end)),
        }
    }

    /// Up to `max` bytes from `pos`.
    pub(super) fn piece(&self, pos: u64, max: usize) -> std::io::Result<Bytes> {
        match self {
            Payload::Memory(b) => {
                let start = (pos as usize).min(b.len());
                Ok(b.slice(start..b.len().min(start + max)))
            }
            Payload::Spooled(s) => s.piece(pos, max),
        }
    }

    fn md5_b64(&self) -> std::result::Result<String, Failure> {
        let d: [u8; 16] = match self {
            Payload::Memory(b) => Md5::digest(b).into(),
            Payload::Spooled(s) => s.md5().map_err(spool_failure)?,
        };
        Ok(base64::engine::general_purpose::STANDARD.encode(d))
    }

    fn equals(&self, other: &[u8]) -> std::result::Result<bool, Failure> {
        match self {
            Payload::Memory(b) => Ok(b[..] == *other),
            Payload::Spooled(s) => s.equals(other).map_err(spool_failure),
        }
    }
}

impl S3Backend {
    // Payload signing would hash every byte a second time (SHA-256 beside the MD5) for a check
    // that some servers (SeaweedFS) never make. Content-MD5 is itself a signed header, so a body
    // changed on the way still fails the server's MD5 check, over plain HTTP too; over HTTPS, TLS
    // authenticates the bytes anyway; and every read is verified against the AEAD and blob ids.
    pub(super) async fn put_single(
        &self,
        key: &str,
        body: Payload,
    ) -> std::result::Result<(), Failure> {
        let client = self.client().await;
        let endpoint = self.endpoint_name();
        let md5 = body.md5_b64()?;
        let watch = stall::Watch::new();
        let mut req = client
            .put_object()
            .bucket(&self.opts.bucket)
            .key(key)
            .content_md5(&md5)
            .if_none_match("*")
            .body(stall::body(body.clone(), &watch));
        if let Some((mode, until)) = self.lock_headers() {
            req = req
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until);
        }
        let r = match watch
            .within(
                self.opts.stall,
                req.customize().disable_payload_signing().send(),
            )
            .await
        {
            Some(r) => r.map_err(|e| classify(&e, &endpoint)),
            None => Err(self.stalled()),
        };
        match r {
            // 412: an object with this name exists. That is our own earlier attempt when its
            // response was lost, or a bug; only identical content counts as success.
            Err(f) if f.status == Some(412) => {
                self.extra(|m| &m.get);
                match self.get_inner(key, None, body.len()).await {
                    Ok(existing) => {
                        if let Some(m) = self.meter.get() {
                            m.received(existing.len());
                        }
                        if body.equals(&existing)? {
                            Ok(())
                        } else {
                            Err(Failure {
                                retry: false,
                                status: Some(412),
                                code: None,
                                message:
                                    "a different object already has this name; refusing to replace it"
                                        .into(),
                            })
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            other => other.map(|_| ()),
        }
    }

    pub(super) async fn put_multipart(
        &self,
        key: &str,
        data: Payload,
    ) -> std::result::Result<(), Failure> {
        let client = self.client().await;
        let endpoint = self.endpoint_name();
        let lock = self.lock_headers();
        // The store's meter counts one request for the call: this is it.
        let mut req = client
            .create_multipart_upload()
            .bucket(&self.opts.bucket)
            .key(key);
        if let Some((mode, until)) = &lock {
            req = req
                .object_lock_mode(mode.clone())
                .object_lock_retain_until_date(*until);
        }
        let out = req
            .send()
            .stall(self.opts.stall)
            .await
            .map_err(|e| classify(&e, &endpoint))?;
        let upload_id = out.upload_id().map(str::to_string).ok_or(Failure {
            retry: true,
            status: None,
            code: None,
            message: "no upload id in the answer".into(),
        })?;
        let policy = self.part_retries();
        let meter = self.meter.get().map(|m| &**m);
        let result = async {
            let mut parts = Vec::new();
            for (i, start) in (0..data.len()).step_by(PART_SIZE).enumerate() {
                let n = i as i32 + 1;
                // A view of the same buffer or file: no copy per part.
                let body = data.part(start, data.len().min(start + PART_SIZE as u64));
                let md5 = body.md5_b64()?;
                let etag = policy
                    .run(
                        meter,
                        |f: &Failure| f.retry,
                        || async {
                            self.extra(|m| &m.put);
                            let watch = stall::Watch::new();
                            let send = client
                                .upload_part()
                                .bucket(&self.opts.bucket)
                                .key(key)
                                .upload_id(&upload_id)
                                .part_number(n)
                                .content_md5(&md5)
                                .body(stall::body(body.clone(), &watch))
                                .customize()
                                .disable_payload_signing()
                                .send();
                            let out = match watch.within(self.opts.stall, send).await {
                                Some(r) => r.map_err(|e| classify(&e, &endpoint))?,
                                None => return Err(self.stalled()),
                            };
                            Ok(out.e_tag().map(str::to_string))
                        },
                    )
                    .await?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(etag)
                        .build(),
                );
            }
            let done = CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build();
            policy
                .run(
                    meter,
                    |f: &Failure| f.retry,
                    || async {
                        self.extra(|m| &m.put);
                        client
                            .complete_multipart_upload()
                            .bucket(&self.opts.bucket)
                            .key(key)
                            .upload_id(&upload_id)
                            .multipart_upload(done.clone())
                            .send()
                            .stall(self.opts.stall)
                            .await
                            .map_err(|e| classify(&e, &endpoint))
                            .map(|_| ())
                    },
                )
                .await
        }
        .await;
        if let Err(mut f) = result {
            // Leave no half-uploaded parts to pay for.
            self.extra(|m| &m.delete);
            let _ = client
                .abort_multipart_upload()
                .bucket(&self.opts.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .stall(self.opts.stall)
                .await;
            // Its parts were retried already: sending the whole object again would not help.
            f.retry = false;
            return Err(f);
        }
        Ok(())
    }
}

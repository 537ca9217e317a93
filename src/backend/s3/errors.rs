//! What an S3 request failure means: transient or not, and a sentence a user can act on
//! (credentials, bucket, region, clock, network) rather than the SDK's error chain.

use super::*;

/// What went wrong with one request, for the retry loop and the user.
pub(super) struct Failure {
    pub(super) retry: bool,
    pub(super) status: Option<u16>,
    pub(super) code: Option<String>,
    pub(super) message: String,
}

fn chain_text(e: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e;
    while let Some(next) = cur.source() {
        parts.push(next.to_string());
        cur = next;
    }
    parts.join(": ")
}

pub(super) fn root_cause(e: &(dyn StdError + 'static)) -> String {
    let mut cur: &(dyn StdError + 'static) = e;
    let mut last = cur.to_string();
    while let Some(next) = cur.source() {
        let s = next.to_string();
        if !s.is_empty() {
            last = s;
        }
        cur = next;
    }
    last
}

pub(super) fn classify<E>(err: &SdkError<E, HttpResponse>, endpoint: &str) -> Failure
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    match err {
        SdkError::ServiceError(se) => {
            let code = se.err().code().map(str::to_string);
            let status = status_of(err);
            let retry = matches!(status, Some(s) if s >= 500 || s == 429)
                || matches!(
                    code.as_deref(),
                    Some(
                        "SlowDown"
                            | "Throttling"
                            | "ThrottlingException"
                            | "RequestTimeout"
                            | "InternalError"
                            | "ServiceUnavailable"
                            | "RequestTimeTooSkewed"
                            // The body arrived other than it was sent (Content-MD5 differs):
                            // flipped on the way; sent again, it arrives whole.
                            | "BadDigest"
                            | "IncompleteBody"
                    )
                );
            let message = explain(code.as_deref(), status, se.err().message());
            Failure {
                retry,
                status,
                code,
                message,
            }
        }
        SdkError::TimeoutError(_) => Failure {
            retry: true,
            status: None,
            code: None,
            message: format!("the S3 endpoint {endpoint} did not answer in time"),
        },
        SdkError::DispatchFailure(df) => {
            let cause = root_cause(err);
            let chain = chain_text(err).to_lowercase();
            let no_credentials = chain.contains("credential");
            // rustls's words for a server that answered a TLS hello with something else.
            let not_tls = chain.contains("invalidcontenttype")
                || chain.contains("corrupt message")
                || chain.contains("wrong version number");
            let message = if not_tls {
                format!(
                    "the S3 endpoint {endpoint} did not answer in TLS: if the server speaks plain \
                     HTTP, give its address as http://"
                )
            } else if chain.contains("dns error") || chain.contains("failed to lookup") {
                let hint = if endpoint == "AWS S3" {
                    " (for a service other than AWS, give its address with --s3-endpoint or \
                     AWS_ENDPOINT_URL)"
                } else {
                    ""
                };
                format!("cannot resolve the S3 endpoint {endpoint}: {cause}{hint}")
            } else if no_credentials {
                "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE for a profile in ~/.aws".to_string()
            } else {
                format!("cannot reach the S3 endpoint {endpoint}: {cause}")
            };
            Failure {
                retry: !df.is_user() && !no_credentials && !not_tls,
                status: None,
                code: None,
                message,
            }
        }
        SdkError::ResponseError(_) => Failure {
            retry: true,
            status: status_of(err),
            code: None,
            message: format!("broken response from {endpoint}: {}", root_cause(err)),
        },
        _ => Failure {
            retry: false,
            status: None,
            code: None,
            message: root_cause(err),
        },
    }
}

type HttpResponse = aws_sdk_s3::config::http::HttpResponse;

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

pub(super) fn status_of<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

fn explain(code: Option<&str>, status: Option<u16>, msg: Option<&str>) -> String {
    let detail = msg.map(|m| format!(" ({m})")).unwrap_or_default();
    // Some servers (Garage) report a bad signature as AccessDenied with a message saying so.
    let lower = msg.map(str::to_lowercase).unwrap_or_default();
    match (code, status) {
        (Some("AccessDenied"), _) if lower.contains("signature") => {
            "the S3 secret key is wrong (the server rejected the request signature)".to_string()
        }
        (Some("AccessDenied"), _) if lower.contains("no such key") => {
            format!("the S3 server does not know this access key{detail}")
        }
        (Some("InvalidAccessKeyId"), _) => {
            format!("the S3 server does not know this access key{detail}")
        }
        (Some("SignatureDoesNotMatch"), _) => {
            "the S3 secret key is wrong (the server rejected the request signature)".to_string()
        }
        (Some("ExpiredToken" | "TokenRefreshRequired"), _) => {
            format!("the S3 credentials have expired{detail}")
        }
        (Some("AccessDenied"), _) | (None, Some(403)) => {
            format!("access denied by the S3 server{detail}")
        }
        (Some("NoSuchBucket"), _) => "the bucket does not exist".to_string(),
        (Some(c), Some(s)) => format!("S3 error {c} (HTTP {s}){detail}"),
        (Some(c), None) => format!("S3 error {c}{detail}"),
        (None, Some(s)) => format!("S3 request failed with HTTP {s}"),
        (None, None) => "S3 request failed".to_string(),
    }
}

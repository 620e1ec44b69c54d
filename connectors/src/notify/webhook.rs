//! The generic webhook: megamind's JSON, signed with HMAC-SHA256.
//!
//! Body: `{"version": 1, "group", "group_labels", "status", "reason", "alerts": [..],
//! "links": [..]}` where each alert carries its `id` (the fingerprint), labels, severity,
//! status and who/when of its transitions. When the channel has a `secret`, two headers are
//! added: `X-Megamind-Timestamp` (ms since the Unix epoch) and `X-Megamind-Signature:
//! sha256=<hex>`, the HMAC-SHA256 under the secret of `<timestamp>.<body>`. Receivers
//! recompute it over the raw body and reject stale timestamps, which stops replays.

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::{DeliveryError, HttpChannelConfig, Notification};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-megamind-signature";
/// The timestamp header.
pub const TIMESTAMP_HEADER: &str = "x-megamind-timestamp";

#[derive(Serialize)]
struct Body<'a> {
    version: u32,
    #[serde(flatten)]
    notification: &'a Notification,
}

/// The webhook body for `notification`.
///
/// # Errors
/// Never in practice (the payload is plain data); serialization errors are passed on.
pub fn body(notification: &Notification) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Body {
        version: 1,
        notification,
    })
}

/// `sha256=<hex>` of HMAC-SHA256(`secret`, `<timestamp>.<body>`).
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("hmac takes keys of any length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` is the right signature of `body` at `timestamp` (constant time).
pub fn verify(secret: &[u8], timestamp: u64, body: &[u8], header: &str) -> bool {
    let Some(hex_signature) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_signature) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// POSTs `notification` to the webhook, signed when a secret is configured.
///
/// # Errors
/// The request failed or the peer answered with a non-2xx status.
pub async fn post(
    client: &reqwest::Client,
    config: &HttpChannelConfig,
    notification: &Notification,
    now_ms: u64,
) -> Result<(), DeliveryError> {
    let body = body(notification).map_err(|error| DeliveryError::Encode(error.to_string()))?;
    let mut request = client
        .post(&config.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(secret) = &config.secret {
        request = request.header(TIMESTAMP_HEADER, now_ms.to_string()).header(
            SIGNATURE_HEADER,
            signature(secret.expose().as_bytes(), now_ms, &body),
        );
    }
    check(request.body(body).send().await)
}

/// POSTs a JSON value (Slack, Teams).
///
/// # Errors
/// The request failed or the peer answered with a non-2xx status.
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    value: &serde_json::Value,
) -> Result<(), DeliveryError> {
    check(client.post(url).json(value).send().await)
}

fn check(response: Result<reqwest::Response, reqwest::Error>) -> Result<(), DeliveryError> {
    let response = response.map_err(DeliveryError::Http)?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(DeliveryError::Status {
            status: status.as_u16(),
        })
    }
}

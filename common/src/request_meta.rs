//! Where a request came from, for audit records: the client address (as the rate limiter sees
//! it, through `TRUSTED_PROXY_HOPS`), the user agent and the request id.

use crate::ratelimit::RateLimiter;
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use std::future::{Ready, ready};

/// Longest `User-Agent` kept; the rest is cut off.
const MAX_USER_AGENT: usize = 512;

/// The origin of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMeta {
    /// The client's address.
    pub ip: Option<String>,
    /// Its `User-Agent`, at most 512 characters.
    pub user_agent: Option<String>,
    /// The request id (`X-Request-Id`, given or assigned).
    pub request_id: Option<String>,
}

impl FromRequest for RequestMeta {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let hops = req
            .app_data::<web::Data<RateLimiter>>()
            .map_or(0, |l| l.settings().trusted_proxy_hops);
        let user_agent = req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(MAX_USER_AGENT).collect());
        ready(Ok(Self {
            ip: crate::ratelimit::client_ip(req, hops).map(|ip| ip.to_string()),
            user_agent,
            request_id: crate::telemetry::call_context_of(req).request_id,
        }))
    }
}

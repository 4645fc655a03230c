//! Load shedding: a process works on at most `MAX_IN_FLIGHT_REQUESTS` requests at once and
//! answers any beyond them at once with a 503 `overloaded` and `Retry-After`
//! (docs/adr/0030-shedding-load-and-bounding-the-fallbacks.md).
//!
//! Without a bound, a backlog has no limit but the clients' patience. A stall of a dependency
//! (Redis paused for a second) leaves thousands of requests in the process; each of them then
//! waits behind the others for the cores, for a pooled connection, for its wake-up, so the
//! dependency's calls time out too, and the fallbacks they take cost more than the calls they
//! replace. The backlog then feeds itself and outlives its cause. Refusing what is beyond the
//! bound costs almost nothing and keeps every admitted request's wait short.
//!
//! Health checks and `/metrics` are always admitted: an overloaded process is still alive, and
//! its operators need to see why.

use crate::problem::Problem;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The requests one process may work on at once.
#[derive(Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl Admission {
    /// At most `limit` requests at once (at least one).
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// How many requests are being worked on now.
    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits()
    }
}

/// The middleware: admits a request while fewer than the bound are in flight, else answers
/// 503 without running anything else.
pub async fn shed_excess(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let admission = match req.app_data::<web::Data<Admission>>() {
        Some(admission) if !crate::http::is_operational(req.path()) => admission.clone(),
        _ => return Ok(next.call(req).await?.map_into_left_body()),
    };
    // Held until the handler has answered. A body that streams on after that (a WebSocket's
    // frames) holds none: an open socket is not a request in flight.
    let Ok(_permit) = admission.permits.clone().try_acquire_owned() else {
        if let Some(metrics) = req.app_data::<web::Data<crate::metrics::Metrics>>() {
            metrics.requests_shed.inc();
        }
        let problem = Problem::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "Overloaded",
        )
        .with_detail("this instance is working on as many requests as it may; retry shortly")
        .with_retry_after(1);
        return Ok(req
            .into_response(problem.error_response())
            .map_into_right_body());
    };
    Ok(next.call(req).await?.map_into_left_body())
}

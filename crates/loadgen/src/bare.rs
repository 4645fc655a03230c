//! The saturating workers' HTTP client: each worker keeps bare HTTP/1.1 connections of its own,
//! one per service it calls, as oha's workers and pgbench's clients do.
//!
//! A saturation run shares the machine's two cores with what it measures, so whatever the
//! driver spends per request is taken from the services. Through reqwest the driver spent
//! 0.017-0.025 ms of CPU per request, about what posts spent answering a `GET /v1/posts/{id}`
//! from its kept rows, and twice what oha spends per request on the same no-op. Here there
//! is no pool shared between workers and no URL parsed per request.

use crate::driver::Call;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::time::Duration;

/// How long one request may take before it counts as failed (as the open loop's client).
const TIMEOUT: Duration = Duration::from_secs(10);

type Body = BoxBody<Bytes, Infallible>;

/// One worker's connections, by `host:port`, opened on first use and again after a failure.
#[derive(Default)]
pub struct Worker {
    connections: Vec<(String, SendRequest<Body>)>,
}

impl Worker {
    /// Sends `call` and reads its whole answer; an error names its cause as the open loop's do
    /// (the status answered, or `timeout`, `connect` or `other`).
    pub async fn send(&mut self, call: Call) -> Result<(), String> {
        let (method, url, token, body, key) = match call {
            Call::Get { url, token } => (Method::GET, url, token, None, None),
            Call::Post {
                url,
                token,
                body,
                key,
            } => (Method::POST, url, Some(token), Some(body), key),
        };
        let rest = url.strip_prefix("http://").ok_or("other")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let mut request = Request::builder()
            .method(method)
            .uri(if path.is_empty() { "/" } else { path })
            .header(HOST, authority);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let request = match body {
            Some(body) => {
                let bytes = serde_json::to_vec(&body).map_err(|_| "other")?;
                request
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(Full::new(Bytes::from(bytes)).boxed())
            }
            None => request.body(Empty::new().boxed()),
        }
        .map_err(|_| "other")?;
        let sender = self.connection(authority).await?;
        let answered = tokio::time::timeout(TIMEOUT, async {
            let response = sender.send_request(request).await.map_err(|_| "other")?;
            let status = response.status();
            response.into_body().collect().await.map_err(|_| "other")?;
            Ok::<_, &str>(status)
        })
        .await;
        let outcome = match answered {
            Ok(Ok(status)) if status.is_success() => return Ok(()),
            Ok(Ok(status)) => return Err(status.as_u16().to_string()),
            Ok(Err(cause)) => cause,
            Err(_) => "timeout",
        };
        // The connection may be closed or mid-answer: the next request opens another.
        self.connections.retain(|(held, _)| held != authority);
        Err(outcome.to_owned())
    }

    /// This worker's connection to `authority`, ready for a request: the one it holds, or a
    /// new one when it holds none or the server has closed it.
    async fn connection(&mut self, authority: &str) -> Result<&mut SendRequest<Body>, String> {
        if let Some(at) = self
            .connections
            .iter()
            .position(|(held, _)| held == authority)
        {
            if self.connections[at].1.ready().await.is_ok() {
                return Ok(&mut self.connections[at].1);
            }
            self.connections.swap_remove(at);
        }
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|_| "connect")?;
        stream.set_nodelay(true).map_err(|_| "connect")?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| "connect")?;
        tokio::spawn(connection);
        sender.ready().await.map_err(|_| "connect")?;
        self.connections.push((authority.to_owned(), sender));
        Ok(&mut self.connections.last_mut().expect("just pushed").1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What a loopback server saw: the connections it accepted and each request's bytes.
    #[derive(Default)]
    struct Seen {
        connections: usize,
        requests: Vec<String>,
    }

    /// A server that answers each request read with `response`, keeping the connection open
    /// unless `response` says `connection: close`. Each request arrives in one read: the worker
    /// sends one small request at a time.
    async fn serving(response: &'static str) -> (String, Arc<Mutex<Seen>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let recorder = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                recorder.lock().unwrap().connections += 1;
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    while let Ok(n @ 1..) = stream.read(&mut buffer).await {
                        let request = String::from_utf8_lossy(&buffer[..n]).into_owned();
                        recorder.lock().unwrap().requests.push(request);
                        if stream.write_all(response.as_bytes()).await.is_err()
                            || response.contains("connection: close")
                        {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{address}"), seen)
    }

    fn get(url: String) -> Call {
        Call::Get { url, token: None }
    }

    #[tokio::test]
    async fn an_error_names_its_cause_as_the_open_loops_do() {
        let mut worker = Worker::default();
        let (ok, _) = serving("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await;
        assert_eq!(worker.send(get(format!("{ok}/"))).await, Ok(()));
        let (shed, _) =
            serving("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
        assert_eq!(
            worker.send(get(format!("{shed}/"))).await,
            Err("503".to_owned())
        );
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", closed.local_addr().unwrap());
        drop(closed);
        assert_eq!(worker.send(get(url)).await, Err("connect".to_owned()));
    }

    #[tokio::test]
    async fn a_worker_keeps_one_connection_and_opens_another_when_it_is_closed() {
        let mut worker = Worker::default();
        let (kept, seen) = serving("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await;
        for _ in 0..3 {
            assert_eq!(worker.send(get(format!("{kept}/v1/feed"))).await, Ok(()));
        }
        assert_eq!(seen.lock().unwrap().connections, 1);
        assert_eq!(seen.lock().unwrap().requests.len(), 3);

        let (closing, seen) =
            serving("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}").await;
        for _ in 0..3 {
            assert_eq!(
                worker.send(get(format!("{closing}/health/live"))).await,
                Ok(())
            );
        }
        assert_eq!(seen.lock().unwrap().connections, 3);
    }

    #[tokio::test]
    async fn a_post_carries_its_token_key_and_body() {
        let mut worker = Worker::default();
        let (url, seen) = serving("HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}").await;
        let call = Call::Post {
            url: format!("{url}/v1/posts"),
            token: "t0ken".into(),
            body: serde_json::json!({"text": "hello"}),
            key: Some("key-1".into()),
        };
        assert_eq!(worker.send(call).await, Ok(()));
        let request = seen.lock().unwrap().requests.concat().to_ascii_lowercase();
        assert!(
            request.starts_with("post /v1/posts http/1.1\r\n"),
            "{request}"
        );
        for expected in [
            "authorization: bearer t0ken\r\n",
            "idempotency-key: key-1\r\n",
            "content-type: application/json\r\n",
            "\r\n\r\n{\"text\":\"hello\"}",
        ] {
            assert!(request.contains(expected), "{expected:?} not in {request}");
        }
    }
}

//! A TCP proxy for fault tests, placed between a service and PostgreSQL, Redis or another
//! service, and switched between faults while traffic flows:
//!
//! - [`Fault::None`]: bytes pass through.
//! - [`Fault::Latency`]: every chunk is held for a while before it is passed on.
//! - [`Fault::Blackhole`]: connections stay open but nothing arrives on either side — a hung
//!   peer, or a network that drops packets.
//! - [`Fault::Reset`]: every open connection is reset, and new ones are reset at once — a peer
//!   that restarts, or a crashing one.
//! - [`Fault::Down`]: as `Reset`, and the port refuses connections — nothing listens.
//!
//! Connections are reset (`SO_LINGER` 0), not closed, so peers see what they see when a server
//! dies: `ECONNRESET`, not a polite end of stream.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pass everything through.
    None,
    /// Hold every chunk this long in each direction.
    Latency(Duration),
    /// Keep connections open and pass nothing.
    Blackhole,
    /// Reset every connection, old and new.
    Reset,
    /// Reset every connection and refuse new ones.
    Down,
}

impl Fault {
    fn kills(self) -> bool {
        matches!(self, Fault::Reset | Fault::Down)
    }
}

/// A running proxy. Dropping it stops accepting; open connections end with the runtime.
pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    accepted: Arc<AtomicU64>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on an ephemeral local port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr()?;
        let (fault, watch) = watch::channel(Fault::None);
        let accepted = Arc::new(AtomicU64::new(0));
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            addr,
            upstream,
            watch,
            accepted.clone(),
        ));
        Ok(Self {
            addr,
            fault,
            accepted,
            accept_loop,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches to `fault`; open connections follow at once.
    pub fn set(&self, fault: Fault) {
        tracing::info!(?fault, addr = %self.addr, "fault proxy switched");
        self.fault.send_replace(fault);
    }

    /// Connections accepted so far (refused ones, while down, are not counted).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut watch: watch::Receiver<Fault>,
    accepted: Arc<AtomicU64>,
) {
    let mut listener = Some(listener);
    loop {
        let fault = *watch.borrow_and_update();
        if fault == Fault::Down {
            listener = None;
            if watch.changed().await.is_err() {
                return;
            }
            continue;
        }
        let Some(open) = &listener else {
            match bind(addr) {
                Ok(bound) => listener = Some(bound),
                Err(e) => {
                    tracing::warn!(error = %e, %addr, "fault proxy cannot listen again yet");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            continue;
        };
        tokio::select! {
            conn = open.accept() => {
                if let Ok((client, _)) = conn {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(client, upstream, watch.clone()));
                }
            }
            changed = watch.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

async fn serve(client: TcpStream, upstream: SocketAddr, watch: watch::Receiver<Fault>) {
    if reset(&client).is_err() || watch.borrow().kills() {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    if reset(&server).is_err() {
        return;
    }
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Whichever direction ends first ends the connection; both sockets are reset on drop.
    tokio::select! {
        () = pump(client_read, server_write, watch.clone()) => {}
        () = pump(server_read, client_write, watch) => {}
    }
}

/// Makes the socket reset, not close, when dropped.
fn reset(stream: &TcpStream) -> io::Result<()> {
    stream.set_zero_linger()
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut watch: watch::Receiver<Fault>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            () = killed(&mut watch) => return,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let fault = *watch.borrow();
        match fault {
            Fault::None => {}
            Fault::Latency(delay) => tokio::time::sleep(delay).await,
            Fault::Blackhole => continue,
            Fault::Reset | Fault::Down => return,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Resolves when the fault turns into one that kills connections.
async fn killed(watch: &mut watch::Receiver<Fault>) {
    loop {
        if watch.borrow_and_update().kills() {
            return;
        }
        if watch.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = conn.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(conn: &mut TcpStream, timeout: Duration) -> io::Result<Vec<u8>> {
        conn.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(timeout, conn.read_exact(&mut buf)).await {
            Ok(read) => read.map(|_| buf.to_vec()),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer")),
        }
    }

    #[tokio::test]
    async fn every_fault_does_what_it_says() {
        let proxy = FaultProxy::start(echo_server().await).await.expect("proxy");
        let second = Duration::from_secs(1);
        let mut conn = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(round_trip(&mut conn, second).await.expect("echo"), b"ping");

        proxy.set(Fault::Latency(Duration::from_millis(100)));
        let started = std::time::Instant::now();
        round_trip(&mut conn, second).await.expect("slow echo");
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "both ways delayed"
        );

        proxy.set(Fault::Blackhole);
        let hung = round_trip(&mut conn, Duration::from_millis(200)).await;
        assert_eq!(
            hung.expect_err("nothing comes back").kind(),
            io::ErrorKind::TimedOut
        );

        proxy.set(Fault::Reset);
        let mut buf = [0u8; 1];
        let reset = tokio::time::timeout(second, conn.read(&mut buf))
            .await
            .expect("at once");
        assert!(matches!(reset, Err(_) | Ok(0)), "{reset:?}");

        proxy.set(Fault::Down);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = TcpStream::connect(proxy.addr()).await;
        assert_eq!(
            refused.expect_err("nothing listens").kind(),
            io::ErrorKind::ConnectionRefused
        );

        proxy.set(Fault::None);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut again = TcpStream::connect(proxy.addr()).await.expect("back up");
        assert_eq!(round_trip(&mut again, second).await.expect("echo"), b"ping");
    }
}

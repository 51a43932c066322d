//! The network a node speaks over, as a value it is given: real TCP
//! ([`Tcp`]) in production, turmoil's simulated TCP in the deterministic
//! simulation (`tests/sim.rs`). The client server and the peer transport
//! only ever see [`Listener`]s and [`Connection`]s, so the same node code
//! runs in both.
//!
//! A connection arrives already split into its read and write halves: the
//! peer transport reads and writes on different tasks, and owned halves
//! need no lock between them.

use crate::task::BoxFuture;
use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};

/// The receiving half of a connection.
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The sending half of a connection.
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// An open stream connection.
pub struct Connection {
    /// Bytes from the other side.
    pub reader: ReadHalf,
    /// Bytes to the other side.
    pub writer: WriteHalf,
    /// This side's address.
    pub local: SocketAddr,
    /// The other side's address.
    pub remote: SocketAddr,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// A bound port that accepts connections.
pub trait Listener: Send + Sync + std::fmt::Debug + 'static {
    /// The next connection.
    fn accept(&self) -> BoxFuture<'_, io::Result<Connection>>;
    /// The bound address.
    ///
    /// # Errors
    /// The socket's error.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// Where listeners and outgoing connections come from.
pub trait Network: Send + Sync + std::fmt::Debug + 'static {
    /// Binds `host:port` (port 0: any free port).
    fn bind<'a>(&'a self, host: &'a str, port: u16)
    -> BoxFuture<'a, io::Result<Box<dyn Listener>>>;
    /// Connects to `addr` (`host:port`).
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<Connection>>;
}

/// The operating system's TCP. Every connection has Nagle off: requests
/// and replies are small and latency-bound, and writes are coalesced by
/// their owners already.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tcp;

#[derive(Debug)]
struct TcpListener(tokio::net::TcpListener);

fn tcp_connection(stream: tokio::net::TcpStream) -> io::Result<Connection> {
    stream.set_nodelay(true)?;
    let (local, remote) = (stream.local_addr()?, stream.peer_addr()?);
    let (reader, writer) = stream.into_split();
    Ok(Connection {
        reader: Box::new(reader),
        writer: Box::new(writer),
        local,
        remote,
    })
}

impl Listener for TcpListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move { tcp_connection(self.0.accept().await?.0) })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Network for Tcp {
    fn bind<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind((host, port)).await?;
            Ok(Box::new(TcpListener(listener)) as Box<dyn Listener>)
        })
    }

    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<Connection>> {
        Box::pin(async move { tcp_connection(tokio::net::TcpStream::connect(addr).await?) })
    }
}

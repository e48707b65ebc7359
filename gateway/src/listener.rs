//! A TCP listener with an explicit backlog: tokio's `TcpListener::bind`
//! uses a small one, and each overflow during a connect burst costs a client
//! a 1 s SYN retransmit. And what axum serves from it: [`Accept`] hands each
//! connection's socket to the router, so that a held connection can keep
//! its socket quiet ([`crate::quiet`]).

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
};

use axum::{extract::connect_info::Connected, serve::IncomingStream};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Binds `addr` with `SO_REUSEADDR` and a listen backlog of `backlog`.
///
/// # Errors
/// When the address is taken or not local.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The listener axum serves: accepts as axum's own does (retrying on
/// errors), sets `TCP_NODELAY` (chat frames are small and latency-bound;
/// never wait for Nagle), and tells the router which socket a request came on.
pub struct Accept(pub TcpListener);

/// A connection's peer and socket, in each request's extensions as
/// `ConnectInfo<Peer>`. The socket is owned by the connection, which
/// outlives every handler of its requests.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub fd: RawFd,
}

impl axum::serve::Listener for Accept {
    type Io = TcpStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (TcpStream, Peer) {
        let (tcp, addr) = axum::serve::Listener::accept(&mut self.0).await;
        let _ = tcp.set_nodelay(true);
        let fd = tcp.as_raw_fd();
        (tcp, Peer { addr, fd })
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer {
            addr: self.0.local_addr()?,
            fd: self.0.as_raw_fd(),
        })
    }
}

impl Connected<IncomingStream<'_, Accept>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Accept>) -> Self {
        *stream.remote_addr()
    }
}

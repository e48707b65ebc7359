//! A TCP listener with an explicit backlog: tokio's `TcpListener::bind`
//! uses a small one, and each overflow during a connect burst costs a client
//! a 1 s SYN retransmit.

use std::{io, net::SocketAddr};

use tokio::net::{TcpListener, TcpSocket};

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

//! Keeping a held connection's socket quiet.
//!
//! A held connection is not read (see [`crate::conn`]), yet every frame its
//! client sends meanwhile still woke the node: the kernel marked the socket
//! readable, the runtime's poller reported it, and the task ignored it. On
//! a node with time to spare, a flood of refused sends cost 9.7-12.6 µs of
//! CPU per frame that way, against 4.5-4.9 µs with the socket quiet
//! (docs/OVERLOAD.md). Raising the socket's receive low-water mark
//! (`SO_RCVLOWAT`) for the hold makes the kernel keep those frames without
//! a wake-up; lowering it again signals the poller at once if anything is
//! waiting (Linux `tcp_set_rcvlowat`), so the frames are read when the hold
//! ends, not at the next one the client happens to send.
//!
//! Only on Linux, whose lowering signals (since 4.18, 2018); elsewhere holds
//! stay as they were. On an older kernel the frames waiting at a hold's end
//! would be read at the client's next frame or pong (at most one keepalive
//! interval), not lost.

use std::{io, os::fd::RawFd};

/// The low-water mark while held. More than a hold's chat frames (5 s of
/// 10 frames/s at ~150 B is 7.5 KiB; past the mark the node is woken once,
/// which is harmless), and small enough that the kernel does not grow the
/// receive buffer for it (it does when twice the mark exceeds the buffer,
/// 128 KiB by default).
const QUIET_BYTES: i32 = 16 * 1024;

/// A connection's socket, for the one option a hold sets, and whether it
/// is set. No socket when the router is served without
/// [`crate::listener::Accept`]: holds then cost a wake-up per frame, as before.
#[derive(Debug, Default)]
pub struct Quiet {
    fd: Option<RawFd>,
    quiet: bool,
}

impl Quiet {
    /// `fd` must be the connection's own socket and outlive every call:
    /// the connection task owns the socket for as long as it runs.
    pub fn new(fd: Option<RawFd>) -> Self {
        Quiet { fd, quiet: false }
    }

    /// Frames that arrive from now on wake nobody until [`Quiet::release`].
    pub fn hold(&mut self) {
        if let Some(fd) = self.fd {
            // Failing costs only the wake-ups this saves.
            self.quiet = set_rcvlowat(fd, QUIET_BYTES).is_ok();
        }
    }

    /// Back to waking on every byte, and at once if frames are waiting. A
    /// socket that is not quiet costs no system call.
    ///
    /// # Errors
    /// When the socket refuses the option: its frames might then never be
    /// read, so the caller ends the connection.
    pub fn release(&mut self) -> io::Result<()> {
        match self.fd {
            Some(fd) if self.quiet => {
                set_rcvlowat(fd, 1)?;
                self.quiet = false;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_rcvlowat(fd: RawFd, bytes: i32) -> io::Result<()> {
    let value: libc::c_int = bytes;
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: `value` is a live c_int and `len` its size, as SO_RCVLOWAT
    // expects; the kernel only reads them. A wrong `fd` is an error return,
    // not undefined behaviour (and `Quiet::new` is given the connection's own).
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const value).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_rcvlowat(_fd: RawFd, _bytes: i32) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::{os::fd::AsRawFd, time::Duration};

    use tokio::{
        io::AsyncWriteExt,
        net::{TcpListener, TcpStream},
        time::timeout,
    };

    use super::*;

    #[tokio::test]
    async fn a_held_socket_stays_unread_and_its_release_wakes_the_reader() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut quiet = Quiet::new(Some(server.as_raw_fd()));

        let mut buf = [0u8; 512];
        // A new socket counts as maybe readable until a read finds nothing.
        let nothing = server.try_read(&mut buf).unwrap_err();
        assert_eq!(nothing.kind(), std::io::ErrorKind::WouldBlock);

        quiet.hold();
        client.write_all(&[b'x'; 200]).await.unwrap();
        // Held: 200 bytes are below the mark, so the poller is not told.
        assert!(
            timeout(Duration::from_millis(300), server.readable())
                .await
                .is_err(),
            "a held socket woke its reader"
        );
        // Released: the frames already waiting wake the reader without
        // another byte from the client.
        quiet.release().unwrap();
        timeout(Duration::from_secs(10), server.readable())
            .await
            .expect("the release did not wake the reader")
            .unwrap();
        assert_eq!(server.try_read(&mut buf).unwrap(), 200, "nothing lost");
    }

    #[test]
    fn without_a_socket_hold_and_release_do_nothing() {
        let mut quiet = Quiet::default();
        quiet.hold();
        assert!(!quiet.quiet);
        assert!(quiet.release().is_ok());
    }

    #[test]
    fn only_a_quiet_socket_is_released() {
        // Not a socket: setting the option fails, so a release must not try.
        let mut quiet = Quiet::new(Some(-1));
        assert!(quiet.release().is_ok(), "never held: no system call");
        quiet.hold();
        assert!(!quiet.quiet, "a failed hold leaves the socket as it was");
        assert!(quiet.release().is_ok());
    }
}

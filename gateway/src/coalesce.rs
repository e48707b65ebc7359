//! Write coalescing under the WebSocket layer.
//!
//! tungstenite batches frames in a `Vec` that grows to the largest burst and
//! is never shrunk, so a big write buffer costs every connection that ever
//! saw a burst, idle or not, and a small one costs a `sendto` per frame. This
//! layer takes the batching instead: frames are copied into a buffer until
//! the connection task flushes (once per batch of queued frames), written in
//! as few calls as the socket allows, and the buffer is released as soon as
//! it is empty, so an idle connection holds none.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Above this many pending bytes a write goes out before buffering more.
const HIGH_WATER: usize = 64 * 1024;

pub struct Coalesce<IO> {
    io: IO,
    buf: Vec<u8>,
    written: usize,
}

impl<IO> Coalesce<IO> {
    pub fn new(io: IO) -> Self {
        Coalesce {
            io,
            buf: Vec::new(),
            written: 0,
        }
    }
}

impl<IO: AsyncWrite + Unpin> Coalesce<IO> {
    /// Writes out everything buffered, then frees the buffer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Coalesce<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Coalesce<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.buf.len() + data.len() > HIGH_WATER {
            ready!(self.poll_drain(cx))?;
            if data.len() > HIGH_WATER {
                return Pin::new(&mut self.io).poll_write(cx, data);
            }
        }
        self.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn writes_wait_for_flush_and_the_buffer_is_released() {
        let (a, mut b) = duplex(1 << 20);
        let mut w = Coalesce::new(a);
        w.write_all(b"one").await.unwrap();
        w.write_all(b"two").await.unwrap();
        assert_eq!(w.buf.len(), 6, "nothing written before the flush");
        w.flush().await.unwrap();
        assert_eq!(w.buf.capacity(), 0, "an idle connection keeps no buffer");
        let mut got = [0u8; 6];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"onetwo");
    }

    #[tokio::test]
    async fn a_burst_past_the_high_water_mark_goes_out_without_a_flush() {
        let (a, mut b) = duplex(1 << 20);
        let mut w = Coalesce::new(a);
        let chunk = vec![7u8; 40 * 1024];
        w.write_all(&chunk).await.unwrap();
        w.write_all(&chunk).await.unwrap();
        let mut got = vec![0u8; 40 * 1024];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got, chunk);
    }
}

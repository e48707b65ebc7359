//! Write coalescing (and read batching) under the WebSocket layer.
//!
//! tungstenite batches frames in a `Vec` that grows to the largest burst and
//! is never shrunk, so a big write buffer costs every connection that ever
//! saw a burst, idle or not, and a small one costs a `sendto` per frame. This
//! layer takes the batching instead: frames are copied into a buffer until
//! the connection task flushes (once per batch of queued frames), written in
//! as few calls as the socket allows, and the buffer is released as soon as
//! it is empty, so an idle connection holds none.
//!
//! Reads have the same trade-off. tungstenite reads into its own buffer,
//! which every connection keeps (`gateway.read_buffer_bytes`, 256 B), so a
//! batch of pipelined frames took a `recvfrom` per 256 bytes. Here a small
//! read takes up to [`READ_CHUNK`] from the socket at once, and keeps what
//! did not fit only until it is read.

use std::{
    io,
    mem::MaybeUninit,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Above this many pending bytes a write goes out before buffering more.
const HIGH_WATER: usize = 64 * 1024;

/// Bytes one socket read may take when the caller asked for fewer. On a
/// starved node at 10x its send capacity, reading 4 KiB instead of 256 B a
/// call carried 14-18 % more sends (docs/OVERLOAD.md).
const READ_CHUNK: usize = 4096;

pub struct Coalesce<IO> {
    io: IO,
    buf: Vec<u8>,
    written: usize,
    /// Bytes read from the socket that the caller had no room for, and how
    /// many of them it has taken since.
    spill: Vec<u8>,
    spilled: usize,
}

impl<IO> Coalesce<IO> {
    pub fn new(io: IO) -> Self {
        Coalesce {
            io,
            buf: Vec::new(),
            written: 0,
            spill: Vec::new(),
            spilled: 0,
        }
    }

    /// Hands over what an earlier read left; frees the spill once empty.
    fn unspill(&mut self, buf: &mut ReadBuf<'_>) {
        let rest = &self.spill[self.spilled..];
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.spilled += n;
        if self.spilled == self.spill.len() {
            self.spill = Vec::new();
            self.spilled = 0;
        }
    }

    /// Makes room for `bytes` more to be written before the next flush, in
    /// one allocation, with at most [`HIGH_WATER`] buffered in all (past it
    /// a write drains first). Grown by doubling from empty, a batch of 50
    /// deliveries took seven reallocations, and glibc's heap, churned that
    /// way by 2,000 connections, got slower after each overload surge
    /// (docs/OVERLOAD.md).
    pub fn reserve(&mut self, bytes: usize) {
        let room = HIGH_WATER.saturating_sub(self.buf.len());
        self.buf.reserve(bytes.min(room));
    }
}

impl<IO: AsyncWrite + Unpin> Coalesce<IO> {
    /// Writes out everything buffered; the buffer is kept for the rest of
    /// the batch (a flush frees it).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Drains, then frees the buffer: an idle connection keeps none.
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        self.buf = Vec::new();
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Coalesce<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.spilled < this.spill.len() {
            this.unspill(buf);
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= READ_CHUNK {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut got = ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(&mut this.io).poll_read(cx, &mut got))?;
        let got = got.filled();
        let n = got.len().min(buf.remaining());
        buf.put_slice(&got[..n]);
        if n < got.len() {
            this.spill = got[n..].to_vec();
            this.spilled = 0;
        }
        Poll::Ready(Ok(()))
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
        ready!(self.poll_release(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_release(cx))?;
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
    async fn a_small_read_takes_what_is_there_and_keeps_the_rest_only_until_read() {
        let (mut a, b) = duplex(1 << 20);
        let sent: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        a.write_all(&sent).await.unwrap();
        let mut r = Coalesce::new(b);
        let mut got = Vec::new();
        let mut small = [0u8; 256];
        let n = r.read(&mut small).await.unwrap();
        got.extend_from_slice(&small[..n]);
        assert_eq!(n, 256);
        assert_eq!(r.spill.len(), 744, "one socket read took all 1,000 bytes");
        while got.len() < sent.len() {
            let n = r.read(&mut small).await.unwrap();
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, sent, "in order, nothing lost or repeated");
        assert_eq!(r.spill.capacity(), 0, "an idle connection keeps no spill");
    }

    #[tokio::test]
    async fn a_reserved_batch_is_buffered_in_one_allocation_and_released_by_the_flush() {
        let (a, mut b) = duplex(1 << 20);
        let mut w = Coalesce::new(a);
        w.reserve(3000);
        let reserved = w.buf.capacity();
        assert!(reserved >= 3000);
        for i in 0..30u8 {
            w.write_all(&[i; 100]).await.unwrap();
        }
        assert_eq!(
            w.buf.capacity(),
            reserved,
            "no reallocation within the batch"
        );
        w.flush().await.unwrap();
        assert_eq!(w.buf.capacity(), 0, "an idle connection keeps no buffer");
        let mut got = vec![0u8; 3000];
        b.read_exact(&mut got).await.unwrap();
        assert!(
            got.chunks(100)
                .enumerate()
                .all(|(i, c)| c.iter().all(|&x| x as usize == i))
        );
    }

    #[tokio::test]
    async fn a_reservation_past_the_high_water_mark_is_capped() {
        let (a, _b) = duplex(1 << 20);
        let mut w = Coalesce::new(a);
        w.reserve(10 * HIGH_WATER);
        assert!(w.buf.capacity() < 2 * HIGH_WATER);
    }

    #[tokio::test]
    async fn a_reservation_adds_to_what_is_already_buffered() {
        let (a, _b) = duplex(1 << 20);
        let mut w = Coalesce::new(a);
        // Replies fed before the deliveries' flush reserves for them.
        w.write_all(&[0; 500]).await.unwrap();
        w.reserve(3000);
        let reserved = w.buf.capacity();
        assert!(reserved >= 3500, "room for both: {reserved}");
        w.write_all(&[1; 3000]).await.unwrap();
        assert_eq!(w.buf.capacity(), reserved, "no reallocation");
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

//! The connection limit (`--max-connections`): at most that many HTTP connections are
//! open at once. At the limit the server accepts no more: a new connection waits in the
//! kernel's listen backlog until one closes (its client sees a slow connect, then its
//! answer), so a flood of connections, idle keep-alive ones included, cannot exhaust the
//! process's file descriptors and memory. The lanes (`api::lanes`) bound the requests
//! in flight; this bounds the connections that carry them. The open connections are the
//! gauge `annals_http_connections`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Gauge: HTTP connections open now.
pub const OPEN: &str = "annals_http_connections";

/// A listener that keeps at most a given number of its connections open.
#[derive(Debug)]
pub struct Limited<L> {
    inner: L,
    slots: Arc<Semaphore>,
}

impl<L> Limited<L> {
    /// `inner`, accepting only while fewer than `max` of its connections are open.
    pub fn new(inner: L, max: usize) -> Self {
        Limited {
            inner,
            slots: Arc::new(Semaphore::new(max.max(1))),
        }
    }
}

impl<L> axum::serve::Listener for Limited<L>
where
    L: axum::serve::Listener,
{
    type Io = Counted<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // Wait for a free slot before accepting: at the limit, new connections stay in
        // the backlog.
        let slot = match self.slots.clone().acquire_owned().await {
            Ok(slot) => slot,
            // Never closed: wait for ever like an idle port.
            Err(_) => std::future::pending().await,
        };
        let (io, address) = self.inner.accept().await;
        metrics::gauge!(OPEN).increment(1.0);
        (Counted { io, _slot: slot }, address)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection, holding its slot until it closes.
#[derive(Debug)]
pub struct Counted<I> {
    io: I,
    _slot: OwnedSemaphorePermit,
}

impl<I> Drop for Counted<I> {
    fn drop(&mut self) {
        metrics::gauge!(OPEN).decrement(1.0);
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

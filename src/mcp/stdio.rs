//! MCP over stdio: stdin/stdout as the transport, ending when the client closes stdin.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rmcp::ServiceExt;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::sync::CancellationToken;

use super::{McpContext, McpServer};

/// Errors of the stdio transport.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    /// The client never completed the protocol start.
    #[error("mcp over stdio did not start: {0}")]
    Start(String),
    /// The session ended abnormally.
    #[error("mcp over stdio failed: {0}")]
    Serve(String),
}

/// Reports end-of-file on the wrapped reader, so long-lived subscriptions end as soon as
/// the client goes away instead of holding the process for the SDK's drain period.
struct EndOfInput<R> {
    inner: R,
    closed: CancellationToken,
}

impl<R: AsyncRead + Unpin> AsyncRead for EndOfInput<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() == before {
            self.closed.cancel();
        }
        polled
    }
}

/// Serves one MCP session on stdin/stdout until the client closes stdin.
///
/// # Errors
/// The client never started the protocol, or the session failed.
pub async fn serve(context: Arc<McpContext>) -> Result<(), StdioError> {
    let transport = (
        EndOfInput {
            inner: tokio::io::stdin(),
            closed: context.shutdown.clone(),
        },
        tokio::io::stdout(),
    );
    let running = McpServer::new(context)
        .serve(transport)
        .await
        .map_err(|error| StdioError::Start(error.to_string()))?;
    running
        .waiting()
        .await
        .map(|_| ())
        .map_err(|error| StdioError::Serve(error.to_string()))
}

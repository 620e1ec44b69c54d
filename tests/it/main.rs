//! End-to-end tests of the `megamind` binary: one module per feature, linked as a single
//! test binary. They run the real executable (`CARGO_BIN_EXE_megamind`) against real
//! peers: an HTTP client, the Python reference implementation of workload P1, a
//! two-process timely cluster on loopback, the official MCP clients (the Python SDK
//! and the MCP Inspector), the independent Python WebSocket client `websockets`, the ML
//! references (scikit-learn, scipy, River, statsmodels), and
//! headless Chromium showing the live dashboard.

mod alerts;
mod anomaly;
mod cluster;
mod dashboard;
mod http_api;
mod insights;
mod kafka;
mod mcp;
mod ml;
mod nab;
mod replay;
mod support;
mod websocket;

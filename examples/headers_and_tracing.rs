//! Carrying a trace id in message headers across a request and its reply.
//!
//! The client puts a fresh trace id in the `X-Trace-Id` header of each request. The responder
//! reads it, does its work, and copies it into the headers of its reply (adding one of its
//! own, `X-Served-By`). The client checks that the reply carries the same trace id, which is
//! how a tracing system stitches the two halves of a call together.
//!
//! ```sh
//! cargo run --example headers_and_tracing -- --count 3
//! ```
//!
//! Exits non-zero when a reply comes back without the request's trace id.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_nats::HeaderMap;
use clap::Parser;
use futures::StreamExt;

const SUBJECT: &str = "svc.inventory.check";
const TRACE_ID: &str = "X-Trace-Id";
const SERVED_BY: &str = "X-Served-By";

/// Passes a trace id through request and reply headers.
#[derive(Debug, Parser)]
struct Args {
    /// Server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    server: String,
    /// Requests to send, each with its own trace id.
    #[arg(long, default_value_t = 3)]
    count: usize,
    /// Timeout for each request, in seconds.
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
}

/// A random 128-bit trace id as 32 hex digits (the W3C trace-id shape).
fn new_trace_id() -> String {
    let state = RandomState::new();
    format!("{:016x}{:016x}", state.hash_one(1u8), state.hash_one(2u8))
}

async fn connect(server: &str, name: &str) -> Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .connect(server)
        .await
        .with_context(|| format!("connecting to {server}"))
}

/// Answers requests, copying the trace id from each request into its reply.
async fn responder(client: async_nats::Client, mut requests: async_nats::Subscriber) -> Result<()> {
    while let Some(request) = requests.next().await {
        let Some(reply) = request.reply else { continue };
        let trace_id = request.headers.as_ref().and_then(|h| h.get(TRACE_ID)).map(|v| v.as_str().to_string());
        println!("responder: {SUBJECT} request, trace id {}", trace_id.as_deref().unwrap_or("(none)"));
        let mut headers = HeaderMap::new();
        if let Some(id) = trace_id {
            headers.insert(TRACE_ID, id);
        }
        headers.insert(SERVED_BY, "inventory-1");
        let body = format!("in stock: {}", String::from_utf8_lossy(&request.payload));
        client.publish_with_headers(reply, headers, body.into()).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();

    let service = connect(&args.server, "inventory service").await?;
    if !service.server_info().headers {
        bail!("the server does not support headers");
    }
    let requests = service.subscribe(SUBJECT).await?;
    service.flush().await?;
    let responder = tokio::spawn(responder(service, requests));

    let client = connect(&args.server, "inventory client").await?;
    let mut mismatches = 0;
    for i in 1..=args.count {
        let trace_id = new_trace_id();
        let mut headers = HeaderMap::new();
        headers.insert(TRACE_ID, trace_id.as_str());
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(format!("sku-{i}").into())
            .timeout(Some(Duration::from_secs_f64(args.timeout)));
        let reply = client.send_request(SUBJECT, request).await.with_context(|| format!("request {i}"))?;
        let headers = reply.headers.as_ref();
        let echoed = headers.and_then(|h| h.get(TRACE_ID)).map(|v| v.as_str());
        let served_by = headers.and_then(|h| h.get(SERVED_BY)).map_or("?", |v| v.as_str());
        let body = String::from_utf8_lossy(&reply.payload);
        if echoed == Some(trace_id.as_str()) {
            println!("request {i}: trace id {trace_id} matches in the reply (served by {served_by}: {body})");
        } else {
            println!("request {i}: trace id {trace_id} sent, reply carried {echoed:?}");
            mismatches += 1;
        }
    }
    responder.abort();
    if mismatches > 0 {
        bail!("{mismatches} of {} replies lost the trace id", args.count);
    }
    println!("all {} replies carried their request's trace id", args.count);
    Ok(())
}

//! A whole stack from a TOML file (feature `serde`): the server preset, the client preset with
//! its retry and breaker, and a cache, each built through its builder, so a value out of range
//! is refused with the setting's name and its allowed range.
//!
//! ```text
//! cargo run --example config --features serde                     # examples/stack.toml
//! cargo run --example config --features serde -- path/to/your.toml
//! ```

use std::sync::Arc;

use palisade::config::{CacheConfig, HttpClientConfig, HttpServerConfig};
use palisade::error::BoxError;
use serde::Deserialize;

/// The file's tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stack {
    server: HttpServerConfig,
    client: HttpClientConfig,
    prices: CacheConfig,
}

fn main() {
    if let Err(error) = run() {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), BoxError> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/examples/stack.toml").to_owned());
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // A typo or a malformed value fails here, naming the table, the key and the line.
    let stack: Stack = toml::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    // A value out of range fails here, naming the setting and its range.
    let server = stack.server.layer()?;
    let client = stack.client.layer()?;
    let prices = stack
        .prices
        .builder(|sku: &u64| Some(*sku))
        .build::<u64, Arc<str>>()?;
    println!("loaded {path}");
    println!("server preset: {server:?}");
    let breaker = client.breaker_handle().map(|handle| handle.metrics());
    println!("client preset: breaker {breaker:?}");
    println!("prices cache: {:?}", prices.handle().metrics());
    Ok(())
}

//! Managed calls in OpenTelemetry traces: every call of an annotated function is a
//! `tracing` span (`optimize.call`, with `fn`, `kind`, `outcome` and `tier`), so the
//! `tracing-opentelemetry` layer turns it into an OpenTelemetry span, a child of the caller's
//! span, with the body's own spans and events inside it.
//!
//! ```text
//! cargo run --example opentelemetry --features otel-example
//! ```
//!
//! The spans are printed by OpenTelemetry's stdout exporter; swap it for the OTLP exporter
//! (`opentelemetry-otlp`) to send them to a collector, Jaeger or Tempo.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[optimize::io(ttl = "1m")]
async fn fetch_user(id: u64) -> Result<String, String> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    tracing::info!(id, "fetched from the user service");
    Ok(format!("user-{id}"))
}

#[optimize::cpu(ttl = "1m")]
fn score(name: &str) -> u64 {
    name.bytes().map(u64::from).sum()
}

#[tokio::main]
async fn main() {
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("optimize-example")))
        .init();
    let optimize = optimize::install(
        optimize::config::Config::builder()
            .without_file()
            .set("l3.enabled", "false"),
    )
    .expect("a valid configuration");

    let request = tracing::info_span!("request", route = "/users/7");
    let total = async {
        let user = fetch_user(7).await?; // computed: the body's event is inside its span
        let again = fetch_user(7).await?; // an L1 hit: outcome = hit_l1, tier = l1
        Ok::<_, String>(score(&user) + score(&again)) // the body runs on the CPU pool
    }
    .instrument(request)
    .await;
    println!("total score: {total:?}");

    drop(optimize);
    provider.shutdown().expect("the exporter flushes");
}

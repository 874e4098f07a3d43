//! What happens when an alert changes state: a tracing event (the default), a Rust closure,
//! or a webhook that receives the change as JSON.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::engine::{AlertEvent, AlertState};
use super::Severity;

/// Receives every state change. Called on the monitor's thread: hand slow work off.
pub trait AlertHandler: Send + Sync + 'static {
    /// One change.
    fn handle(&self, event: &AlertEvent);
}

impl<F: Fn(&AlertEvent) + Send + Sync + 'static> AlertHandler for F {
    fn handle(&self, event: &AlertEvent) {
        self(event)
    }
}

/// Logs changes with tracing: firing at `warn` (`error` for error and critical), resolved
/// at `info`, pending and dropped instances at `debug`. Target `optimize::alert`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingHandler;

impl AlertHandler for TracingHandler {
    fn handle(&self, e: &AlertEvent) {
        let a = &e.alert;
        let labels = format!("{:?}", a.labels);
        match a.state {
            AlertState::Firing if a.severity >= Severity::Error => tracing::error!(
                target: "optimize::alert", alert = %a.rule, severity = %a.severity,
                value = a.value, labels = %labels, "alert firing: {}", a.message
            ),
            AlertState::Firing => tracing::warn!(
                target: "optimize::alert", alert = %a.rule, severity = %a.severity,
                value = a.value, labels = %labels, "alert firing: {}", a.message
            ),
            AlertState::Resolved => tracing::info!(
                target: "optimize::alert", alert = %a.rule, severity = %a.severity,
                value = a.value, labels = %labels, "alert resolved: {}", a.message
            ),
            state => tracing::debug!(
                target: "optimize::alert", alert = %a.rule, severity = %a.severity,
                value = a.value, labels = %labels, state = state.as_str(), "alert {}", a.message
            ),
        }
    }
}

/// POSTs each firing and resolved change as JSON (an [`AlertEvent`]) to a URL, without
/// blocking evaluation; a delivery that fails or exceeds the timeout is logged and counted,
/// never retried (the next change is sent regardless).
///
/// ```no_run
/// use optimize_runtime::monitor::alert::WebhookHandler;
/// use std::time::Duration;
///
/// let hook = WebhookHandler::new("https://alerts.example.com/hook", Duration::from_secs(5));
/// ```
#[derive(Clone)]
pub struct WebhookHandler {
    url: Arc<str>,
    queue: tokio::sync::mpsc::UnboundedSender<AlertEvent>,
    stats: Arc<WebhookStats>,
}

/// Deliveries of one webhook.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Answered with a 2xx status.
    pub delivered: AtomicU64,
    /// Failed: no connection, a timeout, or a non-2xx status.
    pub failed: AtomicU64,
}

impl std::fmt::Debug for WebhookHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a token; only its scheme and host are shown.
        f.debug_struct("WebhookHandler")
            .field("url", &redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("")),
        Err(_) => "<invalid url>".into(),
    }
}

impl WebhookHandler {
    /// A webhook posting to `url`, giving up on each delivery after `timeout`. Deliveries
    /// run on a thread of the handler's own, which ends when the last clone is dropped.
    pub fn new(url: impl Into<String>, timeout: Duration) -> Self {
        let url: Arc<str> = url.into().into();
        let (queue, mut events) = tokio::sync::mpsc::unbounded_channel::<AlertEvent>();
        let stats = Arc::new(WebhookStats::default());
        let (thread_url, thread_stats) = (url.clone(), stats.clone());
        let spawned = crate::monitor::spawn_on_own_runtime(
            "optimize-webhook",
            "the alert webhook thread",
            move || async move {
                let client = reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    .build()
                    .unwrap_or_default();
                let mut deliveries = tokio::task::JoinSet::new();
                while let Some(event) = events.recv().await {
                    let request = client.post(&*thread_url).json(&event);
                    let (stats, target) = (thread_stats.clone(), redact_url(&thread_url));
                    deliveries.spawn(async move {
                        deliver(request, &stats, &target, &event.alert.rule).await
                    });
                    while deliveries.try_join_next().is_some() {}
                }
                // Sent before the handler was dropped: finish them.
                while deliveries.join_next().await.is_some() {}
            },
        );
        if let Err(e) = spawned {
            tracing::error!(error = %e, "optimize: cannot start the webhook thread; alerts will not be posted");
        }
        Self { url, queue, stats }
    }

    /// Delivery counts.
    pub fn stats(&self) -> &Arc<WebhookStats> {
        &self.stats
    }
}

async fn deliver(
    request: reqwest::RequestBuilder,
    stats: &WebhookStats,
    target: &str,
    alert: &str,
) {
    match request.send().await.and_then(|r| r.error_for_status()) {
        Ok(_) => {
            stats.delivered.fetch_add(1, Relaxed);
        }
        Err(e) => {
            stats.failed.fetch_add(1, Relaxed);
            let error = if e.is_timeout() {
                "timed out".to_owned()
            } else {
                e.without_url().to_string()
            };
            tracing::warn!(target: "optimize::alert", %alert, webhook = %target, %error, "alert webhook delivery failed");
        }
    }
}

impl AlertHandler for WebhookHandler {
    fn handle(&self, event: &AlertEvent) {
        if matches!(event.alert.state, AlertState::Firing | AlertState::Resolved) {
            // Fails only when the thread could not start, which was logged.
            let _ = self.queue.send(event.clone());
        }
    }
}

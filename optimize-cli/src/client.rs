//! The monitor endpoint over HTTP.

use std::time::Duration;

/// Why a command failed; each kind has its exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The endpoint could not be reached (exit 2).
    Unreachable(String),
    /// It answered with an error (exit 1).
    Refused(String),
    /// The command was given something it cannot use (exit 64).
    Usage(String),
}

impl Failure {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Failure::Refused(_) => 1,
            Failure::Unreachable(_) => 2,
            Failure::Usage(_) => 64,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(m) | Failure::Refused(m) | Failure::Usage(m) => f.write_str(m),
        }
    }
}

/// A client of one monitor endpoint.
pub(crate) struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
}

impl Client {
    pub(crate) fn new(url: &str, token: Option<String>) -> Self {
        Self {
            base: url.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a TLS backend"),
        }
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Result<String, Failure> {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let response = request.send().map_err(|e| {
            Failure::Unreachable(format!(
                "cannot reach the monitor at {} ({}); pass --url or set OPTIMIZE_CLI_URL",
                self.base,
                root_cause(&e)
            ))
        })?;
        let status = response.status();
        let body = response
            .text()
            .map_err(|e| Failure::Unreachable(format!("{}: {e}", self.base)))?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(Failure::Refused(
                "the monitor needs its token: pass --token or set OPTIMIZE_MONITOR_TOKEN".into(),
            ));
        }
        if !status.is_success() {
            let reason = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| body.trim().to_owned());
            return Err(Failure::Refused(format!("{status}: {reason}")));
        }
        Ok(body)
    }

    pub(crate) fn get_text(&self, path: &str) -> Result<String, Failure> {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }

    pub(crate) fn get_json(&self, path: &str) -> Result<serde_json::Value, Failure> {
        self.get_json_query(path, &[])
    }

    pub(crate) fn get_json_query(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<serde_json::Value, Failure> {
        let body = self.send(self.http.get(format!("{}{path}", self.base)).query(query))?;
        parse(&body, path)
    }

    pub(crate) fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, Failure> {
        let body = self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body.to_string()),
        )?;
        parse(&body, path)
    }
}

fn parse(body: &str, path: &str) -> Result<serde_json::Value, Failure> {
    serde_json::from_str(body).map_err(|e| {
        Failure::Refused(format!(
            "{path} did not answer JSON ({e}): is this an optimize monitor?"
        ))
    })
}

/// The innermost error's message (reqwest's own says only "error sending request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

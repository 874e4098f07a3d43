//! `optimize`: reads a service's monitor endpoint (docs/metrics.md, "The `optimize` command").
//!
//! ```text
//! optimize --url http://127.0.0.1:9464 top
//! optimize stats | functions | alerts | history --from 1h --step 5m | rules
//! optimize invalidate --fn shop::price --args '{"sku": "apple"}'
//! ```

mod client;
mod render;
mod top;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use client::{Client, Failure};

/// Reads and acts on a service's optimize monitor endpoint.
#[derive(Parser)]
#[command(name = "optimize", version, about)]
struct Cli {
    /// The monitor endpoint (`monitor.addr` of the service).
    #[arg(
        long,
        global = true,
        env = "OPTIMIZE_CLI_URL",
        default_value = "http://127.0.0.1:9464"
    )]
    url: String,
    /// The bearer token (`monitor.token` of the service).
    #[arg(
        long,
        global = true,
        env = "OPTIMIZE_MONITOR_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A live view of the functions, tiers, pools and alerts (q or Esc quits).
    Top {
        /// Time between refreshes.
        #[arg(long, default_value = "1s", value_parser = duration)]
        interval: Duration,
    },
    /// Every function, tier and pool now.
    Stats {
        /// The JSON of `/stats` as served.
        #[arg(long)]
        json: bool,
    },
    /// The managed functions: kind, calls, hit ratio, p99.
    Functions {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Alerts pending, firing and recently resolved.
    Alerts {
        /// The JSON of `/alerts` as served.
        #[arg(long)]
        json: bool,
    },
    /// The recorded history over a range.
    History {
        /// Start: how long ago (`2h`) or milliseconds since the Unix epoch.
        #[arg(long, default_value = "1h")]
        from: String,
        /// End (default: now).
        #[arg(long)]
        to: Option<String>,
        /// Width of each row (`1m`, `5m`); default one row per evaluation.
        #[arg(long)]
        step: Option<String>,
        /// Only this function.
        #[arg(long = "fn")]
        function: Option<String>,
        /// The JSON of `/history` as served.
        #[arg(long)]
        json: bool,
    },
    /// Prints the Prometheus rule file of the alert rules in force.
    Rules {
        /// Instead of asking the service, the rules a configuration file gives (the shipped
        /// ones when its `monitor.default_rules` is on, and its `[[alerts]]`).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// Invalidates a function, one call's entry, or a tag, in every tier of every instance
    /// (the service needs `monitor.token`).
    Invalidate {
        /// The function's path, as `functions` lists it.
        #[arg(long = "fn", required_unless_present = "tag", conflicts_with = "tag")]
        function: Option<String>,
        /// One call's key arguments as JSON: `{"id": 7}`, `[7, "eu"]`, or one value.
        #[arg(long, requires = "function")]
        args: Option<String>,
        /// A tag: every entry carrying it.
        #[arg(long)]
        tag: Option<String>,
    },
}

fn duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "{text:?}: expected a duration such as \"1s\" or \"500ms\""
        )),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `--help` and `--version` print and succeed; a usage error is a bad argument (64).
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(Failure::Usage(String::new()).exit_code())
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let client = Client::new(&cli.url, cli.token.clone());
    match run(cli.command, &client) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("optimize: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}

fn run(command: Command, client: &Client) -> Result<(), Failure> {
    match command {
        Command::Top { interval } => top::run(client, interval),
        Command::Stats { json } => {
            let stats = client.get_json("/stats")?;
            if json {
                println!("{stats:#}");
            } else {
                print!("{}", render::stats(&stats));
            }
            Ok(())
        }
        Command::Functions { json } => {
            let stats = client.get_json("/stats")?;
            if json {
                println!("{:#}", stats["functions"]);
            } else {
                print!("{}", render::functions(&stats));
            }
            Ok(())
        }
        Command::Alerts { json } => {
            let alerts = client.get_json("/alerts")?;
            if json {
                println!("{alerts:#}");
            } else {
                print!("{}", render::alerts(&alerts));
            }
            Ok(())
        }
        Command::History {
            from,
            to,
            step,
            function,
            json,
        } => {
            let mut query = vec![("from", from)];
            query.extend(to.map(|t| ("to", t)));
            query.extend(step.map(|s| ("step", s)));
            query.extend(function.map(|f| ("fn", f)));
            let history = client.get_json_query("/history", &query)?;
            if json {
                println!("{history:#}");
            } else {
                print!("{}", render::history(&history));
            }
            Ok(())
        }
        Command::Rules { config: Some(path) } => {
            let config = optimize_runtime::config::Config::builder()
                .file(&path)
                .environment(Vec::<(String, String)>::new())
                .resolve()
                .map_err(|e| Failure::Usage(e.to_string()))?;
            let rules = config.monitor_config().rules;
            print!(
                "{}",
                optimize_runtime::monitor::alert::promfile::rule_file("optimize", &rules)
            );
            Ok(())
        }
        Command::Rules { config: None } => {
            print!("{}", client.get_text("/rules")?);
            Ok(())
        }
        Command::Invalidate {
            function,
            args,
            tag,
        } => {
            let mut body = serde_json::Map::new();
            if let Some(f) = function {
                body.insert("fn".into(), f.into());
            }
            if let Some(args) = args {
                let args: serde_json::Value = serde_json::from_str(&args).map_err(|e| {
                    Failure::Usage(format!(
                        "--args is not JSON ({e}): write e.g. '{{\"id\": 7}}'"
                    ))
                })?;
                body.insert("args".into(), args);
            }
            if let Some(t) = tag {
                body.insert("tag".into(), t.into());
            }
            let answer = client.post_json("/invalidate", &body.into())?;
            println!("{}", render::invalidated(&answer));
            Ok(())
        }
    }
}

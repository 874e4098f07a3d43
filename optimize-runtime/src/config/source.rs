//! Reading configuration sources into [`Layer`]s: the TOML file and the environment. Every
//! problem is collected (not just the first) with its source, key path and expected form.

use std::collections::BTreeMap;

use super::keys::{self, Key, Value, FUNCTION_KEYS, KEYS, SECTIONS};
use super::{ConfigError, Problem};

/// Values from one source, by key path; function overrides by function path.
#[derive(Clone, Debug, Default)]
pub(crate) struct Layer {
    pub(crate) source: String,
    pub(crate) values: BTreeMap<&'static str, Value>,
    pub(crate) functions: BTreeMap<String, BTreeMap<&'static str, Value>>,
    pub(crate) alerts: Vec<crate::monitor::alert::Rule>,
    /// For the environment: the variable each key came from, for error messages.
    pub(crate) variables: BTreeMap<&'static str, String>,
}

impl Layer {
    pub(crate) fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            ..Self::default()
        }
    }
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

fn unknown(path: &str, word: &str, candidates: Vec<&str>) -> String {
    match keys::did_you_mean(word, candidates.iter().copied()) {
        Some(s) => format!("unknown key `{path}`; did you mean `{s}`?"),
        None => format!(
            "unknown key `{path}`; the keys here are: {}",
            candidates.join(", ")
        ),
    }
}

/// Reads TOML text; `source` names the file in errors.
pub(crate) fn from_toml(source: &str, text: &str) -> Result<Layer, ConfigError> {
    let mut layer = Layer::new(source);
    let mut problems = Vec::new();
    let problem = |key: String, message: String| Problem {
        source: source.to_owned(),
        key,
        message,
    };
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            return Err(ConfigError(vec![problem(
                String::new(),
                format!("not valid TOML: {}", e.message()),
            )]))
        }
    };
    let mut read = |path: &str, key: &'static Key, value: &toml::Value| -> Option<Value> {
        keys::read_toml(key, value)
            .map_err(|message| problems.push(problem(path.to_owned(), message)))
            .ok()
    };
    let mut structural = Vec::new();
    for (name, value) in &table {
        match (name.as_str(), value) {
            ("functions", toml::Value::Table(functions)) => {
                for (function, overrides) in functions {
                    let toml::Value::Table(overrides) = overrides else {
                        structural.push(problem(
                            format!("functions.\"{function}\""),
                            format!(
                                "expected a table such as [functions.\"{function}\"] with ttl, tiers, ...; found {}",
                                type_name(overrides)
                            ),
                        ));
                        continue;
                    };
                    let mut values = BTreeMap::new();
                    for (k, v) in overrides {
                        let path = format!("functions.\"{function}\".{k}");
                        match keys::find(FUNCTION_KEYS, k) {
                            Some(key) => {
                                if let Some(parsed) = read(&path, key, v) {
                                    values.insert(key.path, parsed);
                                }
                            }
                            None => structural.push(problem(
                                path.clone(),
                                unknown(&path, k, FUNCTION_KEYS.iter().map(|k| k.path).collect()),
                            )),
                        }
                    }
                    layer.functions.insert(function.clone(), values);
                }
            }
            ("alerts", toml::Value::Array(_)) => {
                let mut only_alerts = toml::Table::new();
                only_alerts.insert("alerts".into(), value.clone());
                match crate::monitor::alert::rules_from_toml(source, &only_alerts.to_string()) {
                    Ok(rules) => layer.alerts = rules,
                    Err(e) => structural.push(problem("alerts".into(), e.message)),
                }
            }
            (section, toml::Value::Table(inner)) if SECTIONS.contains(&section) => {
                for (k, v) in inner {
                    let path = format!("{section}.{k}");
                    match keys::find(KEYS, &path) {
                        Some(key) => {
                            if let Some(parsed) = read(&path, key, v) {
                                layer.values.insert(key.path, parsed);
                            }
                        }
                        None => {
                            let siblings: Vec<&str> = KEYS
                                .iter()
                                .filter_map(|key| key.path.strip_prefix(&format!("{section}.")))
                                .collect();
                            structural.push(problem(path.clone(), unknown(&path, k, siblings)));
                        }
                    }
                }
            }
            (name, value) => match keys::find(KEYS, name) {
                Some(key) => {
                    if let Some(parsed) = read(name, key, value) {
                        layer.values.insert(key.path, parsed);
                    }
                }
                None => {
                    let top: Vec<&str> = KEYS
                        .iter()
                        .map(|k| k.path)
                        .filter(|p| !p.contains('.'))
                        .chain(SECTIONS.iter().copied())
                        .collect();
                    let message = if SECTIONS.contains(&name) {
                        format!(
                            "`{name}` must be a table ([{name}]); found {}",
                            type_name(value)
                        )
                    } else {
                        unknown(name, name, top)
                    };
                    structural.push(problem(name.to_owned(), message));
                }
            },
        }
    }
    problems.extend(structural);
    if problems.is_empty() {
        Ok(layer)
    } else {
        Err(ConfigError(problems))
    }
}

/// Reads `OPTIMIZE_*` variables from `vars` (the process environment in production).
/// Variables no key owns come back apart: an installed configuration treats them as
/// problems, the lazy default only warns (other software may use the prefix too).
pub(crate) fn from_env(
    vars: impl IntoIterator<Item = (String, String)>,
) -> (Result<Layer, ConfigError>, Vec<Problem>) {
    let mut layer = Layer::new("environment");
    let mut problems = Vec::new();
    let mut unknown_variables = Vec::new();
    let names: Vec<(String, &'static Key)> = KEYS
        .iter()
        .flat_map(|k| {
            std::iter::once((keys::env_name(k), k)).chain(k.env_alias.map(|a| (a.to_owned(), k)))
        })
        .collect();
    for (var, value) in vars {
        if !var.starts_with("OPTIMIZE_") || value.trim().is_empty() {
            continue;
        }
        // Variables the configuration does not own: the file's path, the demo's settings
        // and the `optimize` command's.
        if var == "OPTIMIZE_CONFIG"
            || var.starts_with("OPTIMIZE_DEMO_")
            || var.starts_with("OPTIMIZE_CLI_")
        {
            continue;
        }
        let Some((_, key)) = names.iter().find(|(n, _)| *n == var) else {
            let suggestion = keys::did_you_mean(&var, names.iter().map(|(n, _)| n.as_str()));
            unknown_variables.push(Problem {
                source: "environment".into(),
                key: var.clone(),
                message: match suggestion {
                    Some(s) => format!("unknown variable; did you mean {s}?"),
                    None => "unknown variable; docs/configuration.md lists them".into(),
                },
            });
            continue;
        };
        match keys::read_str(key, &value) {
            Ok(parsed) => {
                layer.values.insert(key.path, parsed);
                layer.variables.insert(key.path, var.clone());
            }
            Err(message) => problems.push(Problem {
                source: "environment".into(),
                key: format!("{var} ({})", key.path),
                message,
            }),
        }
    }
    let layer = if problems.is_empty() {
        Ok(layer)
    } else {
        Err(ConfigError(problems))
    };
    (layer, unknown_variables)
}

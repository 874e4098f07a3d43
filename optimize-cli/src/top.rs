//! `optimize top`: a live, `top`-like view of the functions, tiers, pools and alerts,
//! refreshed every interval. `q`, `Esc` or Ctrl-C quits; `s` cycles the sort column.

use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;
use serde_json::Value;

use crate::client::{Client, Failure};
use crate::render;

/// What the screen shows: the last answers, and the calls per second between the last two.
struct View {
    url: String,
    stats: Option<Value>,
    health: Option<Value>,
    alerts: Option<Value>,
    error: Option<String>,
    /// Calls per function at the previous refresh, to show calls per second.
    previous: Vec<(String, f64, Instant)>,
    rates: Vec<(String, f64)>,
    sort: Sort,
}

#[derive(Clone, Copy)]
enum Sort {
    Rate,
    Calls,
    P99,
    Name,
}

impl Sort {
    fn next(self) -> Self {
        match self {
            Sort::Rate => Sort::Calls,
            Sort::Calls => Sort::P99,
            Sort::P99 => Sort::Name,
            Sort::Name => Sort::Rate,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Sort::Rate => "calls/s",
            Sort::Calls => "calls",
            Sort::P99 => "p99",
            Sort::Name => "name",
        }
    }
}

pub(crate) fn run(client: &Client, interval: Duration) -> Result<(), Failure> {
    // Fail before taking over the terminal when the endpoint cannot be read at all.
    client.get_json("/stats")?;
    let mut terminal = ratatui::init();
    let mut view = View {
        url: client.base().to_owned(),
        stats: None,
        health: None,
        alerts: None,
        error: None,
        previous: Vec::new(),
        rates: Vec::new(),
        sort: Sort::Rate,
    };
    let result = (|| -> std::io::Result<()> {
        loop {
            view.refresh(client);
            terminal.draw(|frame| view.draw(frame))?;
            let until = Instant::now() + interval;
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                if !event::poll(left)? {
                    break;
                }
                if let Event::Key(key) = event::read()? {
                    if key.kind != KeyEventKind::Press {
                        continue;
                    }
                    let ctrl_c = key.code == KeyCode::Char('c')
                        && key.modifiers.contains(KeyModifiers::CONTROL);
                    match key.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        _ if ctrl_c => return Ok(()),
                        KeyCode::Char('s') => {
                            view.sort = view.sort.next();
                            terminal.draw(|frame| view.draw(frame))?;
                        }
                        _ => {}
                    }
                }
            }
        }
    })();
    ratatui::restore();
    result.map_err(|e| Failure::Refused(format!("the terminal: {e}")))
}

impl View {
    fn refresh(&mut self, client: &Client) {
        let read = |path| client.get_json(path).map_err(|e| e.to_string());
        match (read("/stats"), read("/health"), read("/alerts")) {
            (Ok(stats), Ok(health), Ok(alerts)) => {
                let now = Instant::now();
                let mut current = Vec::new();
                let mut rates = Vec::new();
                for f in stats["functions"].as_array().into_iter().flatten() {
                    let path = f["fn"].as_str().unwrap_or("").to_owned();
                    let calls = f["calls"].as_f64().unwrap_or(0.0);
                    if let Some((_, before, at)) = self.previous.iter().find(|(p, _, _)| *p == path)
                    {
                        let secs = now.duration_since(*at).as_secs_f64().max(1e-3);
                        rates.push((path.clone(), ((calls - before) / secs).max(0.0)));
                    }
                    current.push((path, calls, now));
                }
                self.previous = current;
                self.rates = rates;
                self.stats = Some(stats);
                self.health = Some(health);
                self.alerts = Some(alerts);
                self.error = None;
            }
            (a, b, c) => {
                self.error = [a.err(), b.err(), c.err()].into_iter().flatten().next();
            }
        }
    }

    fn rate(&self, path: &str) -> Option<f64> {
        self.rates.iter().find(|(p, _)| p == path).map(|(_, r)| *r)
    }

    fn draw(&self, frame: &mut Frame<'_>) {
        let functions =
            self.stats
                .as_ref()
                .map_or(0, |s| s["functions"].as_array().map_or(0, Vec::len)) as u16;
        let alerts = self
            .alerts
            .as_ref()
            .map_or(0, |a| a["alerts"].as_array().map_or(0, Vec::len)) as u16;
        let [header, fns, pools, tiers, alert_area] = Layout::vertical([
            Constraint::Length(2),
            Constraint::Length(functions.max(1) + 3),
            Constraint::Length(6),
            Constraint::Length(3),
            Constraint::Min(alerts.min(8) + 3),
        ])
        .areas(frame.area());

        let status = self
            .health
            .as_ref()
            .and_then(|h| h["status"].as_str())
            .unwrap_or("unknown");
        let color = match status {
            "healthy" => Color::Green,
            "degraded" => Color::Yellow,
            _ => Color::Red,
        };
        let mut lines = vec![Line::from(vec![
            ratatui::text::Span::styled("optimize top ", Style::new().add_modifier(Modifier::BOLD)),
            ratatui::text::Span::raw(format!("{}  ", self.url)),
            ratatui::text::Span::styled(status.to_owned(), Style::new().fg(color)),
            ratatui::text::Span::raw(format!("  sorted by {} (s)  q quits", self.sort.name())),
        ])];
        if let Some(e) = &self.error {
            lines.push(Line::styled(e.clone(), Style::new().fg(Color::Red)));
        }
        frame.render_widget(Paragraph::new(lines), header);

        let Some(stats) = &self.stats else {
            return;
        };
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let table = render::function_table(stats);
        let mut rows: Vec<&Vec<String>> = table.rows().iter().collect();
        let p99 = |r: &Vec<String>| {
            stats["functions"]
                .as_array()
                .and_then(|fs| fs.iter().find(|f| f["fn"].as_str() == Some(&r[0])))
                .and_then(|f| f["p99_ms"].as_f64())
                .unwrap_or(0.0)
        };
        let calls = |r: &Vec<String>| r[2].parse::<f64>().unwrap_or(0.0);
        match self.sort {
            Sort::Rate => rows.sort_by(|a, b| {
                let (ra, rb) = (
                    self.rate(&a[0]).unwrap_or(0.0),
                    self.rate(&b[0]).unwrap_or(0.0),
                );
                rb.total_cmp(&ra)
                    .then_with(|| calls(b).total_cmp(&calls(a)))
            }),
            Sort::Calls => rows.sort_by(|a, b| calls(b).total_cmp(&calls(a))),
            Sort::P99 => rows.sort_by(|a, b| p99(b).total_cmp(&p99(a))),
            Sort::Name => rows.sort_by(|a, b| a[0].cmp(&b[0])),
        }
        let fn_rows = rows.into_iter().map(|r| {
            let rate = self
                .rate(&r[0])
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
            let mut cells = vec![r[0].clone(), r[1].clone(), rate];
            cells.extend(r[2..].iter().cloned());
            Row::new(cells)
        });
        let widths = [
            Constraint::Min(24),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(6),
        ];
        frame.render_widget(
            Table::new(fn_rows, widths)
                .header(
                    Row::new([
                        "FN", "KIND", "CALLS/S", "CALLS", "HIT", "L1", "L2", "L3", "P50", "P99",
                        "ERRORS", "STALE",
                    ])
                    .style(bold),
                )
                .block(Block::bordered().title(" functions ")),
            fns,
        );

        let pool_table = render::pool_table(stats);
        frame.render_widget(
            Table::new(
                pool_table.rows().iter().map(|r| Row::new(r.clone())),
                [Constraint::Length(8); 7],
            )
            .header(
                Row::new([
                    "POOL", "CAPACITY", "ACTIVE", "QUEUED", "DONE", "REJECTED", "WAIT P99",
                ])
                .style(bold),
            )
            .block(Block::bordered().title(" pools ")),
            pools,
        );
        frame.render_widget(
            Paragraph::new(render::tiers_line(stats)).block(Block::bordered().title(" tiers ")),
            tiers,
        );
        let alert_rows: Vec<Row<'_>> = self
            .alerts
            .as_ref()
            .map(|a| {
                render::alert_table(a)
                    .rows()
                    .iter()
                    .map(|r| {
                        let style = match r[0].as_str() {
                            "firing" => Style::new().fg(Color::Red),
                            "pending" => Style::new().fg(Color::Yellow),
                            _ => Style::new(),
                        };
                        Row::new(r.clone()).style(style)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let none = alert_rows.is_empty();
        frame.render_widget(
            Table::new(
                alert_rows,
                [
                    Constraint::Length(9),
                    Constraint::Length(9),
                    Constraint::Length(24),
                    Constraint::Length(24),
                    Constraint::Min(20),
                ],
            )
            .header(Row::new(["STATE", "SEVERITY", "RULE", "LABELS", "MESSAGE"]).style(bold))
            .block(Block::bordered().title(if none {
                " alerts: none "
            } else {
                " alerts "
            })),
            alert_area,
        );
    }
}

//! The dashboard, loaded from the running demo in headless Chromium: the table lists the
//! demo's functions, every chart holds data points, and a screenshot is saved
//! (`target/dashboard.png`; the one in docs/ came from this test).

#[path = "support/demo.rs"]
mod demo;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use demo::{Demo, TOKEN};

const CHARTS: [&str; 7] = [
    "chart-hit",
    "chart-latency",
    "chart-throughput",
    "chart-queue",
    "chart-wait",
    "chart-memory",
    "chart-cpu",
];

/// Runs Debian's Chromium headless on `url` with `args` (at most 90 s); its stdout.
fn chromium(url: &str, args: &[&str], profile: &Path) -> String {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1400,1250",
            // Time for the page's reads and drawing (virtual time runs ahead when idle).
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium runs (scripts/test.sh installs Debian's chromium): the dashboard is tested in a real browser");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
            assert!(status.success(), "chromium failed ({status}):\n{out}");
            return out;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of attribute `name` in the element whose `id` is `id`.
fn attribute<'d>(dom: &'d str, id: &str, name: &str) -> Option<&'d str> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    let tag = &dom[start..end];
    let key = format!("{name}=\"");
    let from = tag.find(&key)? + key.len();
    Some(&tag[from..from + tag[from..].find('"')?])
}

/// The markup of the element whose `id` is `id`, up to its closing `</svg>`.
fn svg<'d>(dom: &'d str, id: &str) -> &'d str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    &dom[at..at + dom[at..].find("</svg>").unwrap()]
}

fn target_dir() -> PathBuf {
    demo::demo_binary()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned()
}

#[test]
fn the_dashboard_shows_the_demo_in_a_real_browser() {
    let demo = Demo::start(&[], 180, true);
    let url = format!("{}/dashboard?token={TOKEN}", demo.base);

    // Without the token there is nothing; with it, a cookie and the page without it.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (open, redirect) = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let open = client
            .get(format!("{}/dashboard", demo.base))
            .send()
            .await
            .unwrap()
            .status();
        let redirect = client.get(&url).send().await.unwrap();
        (open, redirect)
    });
    assert_eq!(open, 401);
    assert_eq!(redirect.status(), 303);
    assert_eq!(redirect.headers()["location"], "/dashboard");
    let cookie = redirect.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    let profile = tempfile::tempdir().unwrap();
    let dom = chromium(&url, &["--dump-dom"], profile.path());
    assert!(
        dom.contains("data-refreshed="),
        "the page's script ran:\n{dom}"
    );
    let table = &dom[dom.find("id=\"functions\"").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    for f in [
        "demo::optimized::fetch_profile",
        "demo::optimized::risk_score",
    ] {
        assert!(table.contains(f), "{f} missing from the table:\n{table}");
    }
    for chart in CHARTS {
        let points: usize = attribute(&dom, chart, "data-points")
            .unwrap_or_else(|| panic!("no #{chart}"))
            .parse()
            .unwrap();
        assert!(
            points > 0,
            "{chart} has no data points:\n{}",
            svg(&dom, chart)
        );
        assert!(
            svg(&dom, chart).contains("<polyline"),
            "{chart} draws no line:\n{}",
            svg(&dom, chart)
        );
    }
    assert!(
        dom.contains("DemoBacklogDeep"),
        "the demo's alert is listed"
    );
    assert!(
        dom.contains("id=\"error\"></span>"),
        "no read failed: {}",
        &dom[dom.find("id=\"error\"").unwrap()..][..200]
    );

    // A few seconds of the demo's trickle, so the charts have a run and some time after it.
    std::thread::sleep(Duration::from_secs(4));
    let shot = target_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    chromium(
        &url,
        &[&format!("--screenshot={}", shot.display())],
        profile.path(),
    );
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    println!("screenshot: {}", shot.display());
}

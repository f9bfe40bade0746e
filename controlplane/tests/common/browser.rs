//! Headless Chromium for the tests of pages: `chromium()` finds the
//! browser (`CODEB_CHROMIUM`, else `chromium` or `chromium-browser` on
//! `PATH`) or skips the test with a line saying so — unless
//! `CODEB_REQUIRE_CHROMIUM=1` (tests/run sets it), which makes a missing
//! browser a failure, as `CODEB_REQUIRE_PG=1` does for PostgreSQL.
//! `dump_dom` loads a page in a fresh profile and returns the DOM as it
//! stands after the page had its chance to run anything; the browser and
//! every process it started are killed by a deadline, so a test never hangs
//! on it.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Headless, in a container, without the GPU, QUIC or first-run pages;
/// the last three keep it from reaching Google's hosts at every start.
pub const HEADLESS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// How long one page load may take, start to exit.
const DEADLINE: Duration = Duration::from_secs(60);

/// The browser, or None (and a skip line) when there is none and none is
/// required.
pub fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("CODEB_CHROMIUM")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .flat_map(|dir| [dir.join("chromium"), dir.join("chromium-browser")])
                .find(|p| p.is_file())
        });
    if found.is_none() {
        assert!(
            std::env::var("CODEB_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "CODEB_REQUIRE_CHROMIUM=1 but Chromium was not found \
             (apt-get install chromium, or set CODEB_CHROMIUM)"
        );
        eprintln!("Chromium not found (apt-get install chromium): skipping this browser test");
    }
    found
}

/// Loads `url` and returns the DOM Chromium serialises once the page is
/// done (`--virtual-time-budget` lets timers and event handlers, such as
/// an `onerror` of a broken image, run first).
pub fn dump_dom(chromium: &Path, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium)
        .args(HEADLESS)
        .args(["--virtual-time-budget=3000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own process group: the renderer and helper processes die
        // with it below.
        .process_group(0)
        .spawn()
        .expect("start chromium");
    let group = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        let _ = stdout.read_to_string(&mut dom);
        dom
    });
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Whatever is left of the group (helpers, or all of it after the
    // deadline) is killed; then stdout reaches its end.
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    if status.is_none() {
        let _ = child.wait();
    }
    let dom = reader.join().unwrap();
    let status =
        status.unwrap_or_else(|| panic!("chromium did not load {url} within {DEADLINE:?}"));
    assert!(
        status.success(),
        "chromium exited with {status} loading {url}"
    );
    dom
}

//! Headless Chromium driven over the DevTools protocol, for pages a person
//! clicks through: `Tab::open` starts a browser in a fresh profile and
//! attaches to one tab; `goto`, `eval`, `click`, `fill` and `wait_for` act
//! on it as a user would (a click is the DOM's `click()`, so a form's
//! `required` fields and submit handlers run as they do for a person). The
//! browser and every process it started are killed with the `Tab`, and
//! every wait has a deadline, so a test never hangs on it.

use std::io::{BufRead as _, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

/// How long one protocol command, or one `wait_for`, may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

/// The browser's process group, killed when this is dropped: a test that
/// fails anywhere after the start (the handshake included) leaves no
/// browser running.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = i32::try_from(self.0.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.0.wait();
    }
}

pub struct Tab {
    _browser: Browser,
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

/// Marks the current document, so waiting for the next one's readiness
/// is not fooled by its own.
const MARK_OLD_DOCUMENT: &str = "window.__cdpOld = true";
/// True once a document other than the marked one has loaded.
const NEW_DOCUMENT_READY: &str = "!window.__cdpOld && location.href !== 'about:blank' && \
     document.readyState === 'complete'";

impl Tab {
    pub fn open(chromium: &Path) -> Tab {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(chromium)
            .args(super::browser::HEADLESS)
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start chromium");
        let mut browser = Browser(child);
        // It says where its DevTools endpoint listens on stderr; the rest
        // of stderr is drained so it never blocks on a full pipe.
        let stderr = browser.0.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let Ok(url) = rx.recv_timeout(COMMAND_DEADLINE) else {
            panic!("chromium did not open its DevTools endpoint");
        };
        let addr = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("unexpected DevTools URL {url}"))
            .to_owned();
        let stream = TcpStream::connect(&addr).unwrap();
        // The handshake is bounded as a whole; then each read wakes every
        // 500 ms so a command's own deadline is checked.
        stream.set_read_timeout(Some(COMMAND_DEADLINE)).unwrap();
        let (ws, _) = tungstenite::client::client(url.as_str(), stream).unwrap();
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut tab = Tab {
            _browser: browser,
            ws,
            session: String::new(),
            next_id: 1,
            _profile: profile,
        };
        let target = tab.command("Target.createTarget", json!({"url": "about:blank"}), false);
        let target = target["targetId"].as_str().unwrap().to_owned();
        let attached = tab.command(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
            false,
        );
        tab.session = attached["sessionId"].as_str().unwrap().to_owned();
        tab
    }

    /// One protocol command (of the tab's session, or of the browser) and
    /// its result; a protocol error fails the test.
    fn command(&mut self, method: &str, params: Value, in_tab: bool) -> Value {
        match self.try_command(method, params, in_tab) {
            Ok(v) => v,
            Err(err) => panic!("{method}: {err}"),
        }
    }

    /// [`Self::command`], with a protocol error as `Err`.
    fn try_command(&mut self, method: &str, params: Value, in_tab: bool) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if in_tab {
            msg["sessionId"] = Value::String(self.session.clone());
        }
        self.ws.send(Message::text(msg.to_string())).unwrap();
        let deadline = Instant::now() + COMMAND_DEADLINE;
        loop {
            assert!(
                Instant::now() < deadline,
                "{method}: no reply within {COMMAND_DEADLINE:?}"
            );
            let frame = match self.ws.read() {
                Ok(frame) => frame,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => panic!("{method}: DevTools connection failed: {e}"),
            };
            let Message::Text(text) = frame else { continue };
            let reply: Value = serde_json::from_str(text.as_str()).unwrap();
            if reply["id"] != id {
                continue; // an event, or an earlier command's late reply
            }
            if let Some(err) = reply.get("error") {
                return Err(err.clone());
            }
            return Ok(reply["result"].clone());
        }
    }

    /// Loads `url` and waits until the new document is complete (the
    /// old one is marked first, so its own readiness does not count).
    pub fn goto(&mut self, url: &str) {
        self.eval(MARK_OLD_DOCUMENT);
        self.command("Page.navigate", json!({"url": url}), true);
        self.wait_for(&format!("{url} loaded"), NEW_DOCUMENT_READY);
    }

    /// Clicks `selector` (which must load a document: a link, or a button
    /// whose handler reloads) and waits until the new document is
    /// complete, as [`Self::goto`] does.
    pub fn click_to_new_document(&mut self, selector: &str) {
        self.eval(MARK_OLD_DOCUMENT);
        self.click(selector);
        self.wait_for(
            &format!("the document {selector} loads"),
            NEW_DOCUMENT_READY,
        );
    }

    /// The value of a JavaScript expression (a promise is awaited); an
    /// exception fails the test.
    pub fn eval(&mut self, js: &str) -> Value {
        let r = self.command(
            "Runtime.evaluate",
            json!({"expression": js, "awaitPromise": true, "returnByValue": true}),
            true,
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!(
                "{js}: {}",
                ex["exception"]["description"]
                    .as_str()
                    .unwrap_or(&ex.to_string())
            );
        }
        r["result"]["value"].clone()
    }

    /// Polls `js` until it is truthy and returns its value; `what` names
    /// the wait in the failure.
    pub fn wait_for(&mut self, what: &str, js: &str) -> Value {
        let deadline = Instant::now() + COMMAND_DEADLINE;
        loop {
            // A document that navigates while the expression runs is not
            // ready yet: ask the next one.
            let params = json!({"expression": js, "awaitPromise": true, "returnByValue": true});
            let v = match self.try_command("Runtime.evaluate", params, true) {
                Err(err) if navigated(&err) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                Err(err) => panic!("waiting for {what}: {err}"),
                Ok(r) if r.get("exceptionDetails").is_some() => {
                    panic!("waiting for {what}: {js}: {}", r["exceptionDetails"])
                }
                Ok(r) => r["result"]["value"].clone(),
            };
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                let page = self.eval("document.body ? document.body.innerText.slice(0, 2000) : ''");
                panic!("waited {COMMAND_DEADLINE:?} for {what}; last {v}; the page reads: {page}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the element `selector` finds (it must exist).
    pub fn click(&mut self, selector: &str) {
        let s = json!(selector);
        self.eval(&format!(
            "(() => {{ const e = document.querySelector({s}); \
             if (!e) throw new Error('nothing matches ' + {s}); e.click(); return true; }})()"
        ));
    }

    /// Types `value` into the field `selector` finds, as input events.
    pub fn fill(&mut self, selector: &str, value: &str) {
        let (s, v) = (json!(selector), json!(value));
        self.eval(&format!(
            "(() => {{ const e = document.querySelector({s}); \
             if (!e) throw new Error('nothing matches ' + {s}); e.value = {v}; \
             e.dispatchEvent(new Event('input', {{bubbles: true}})); \
             e.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()"
        ));
    }

    /// The text of the element `selector` finds ("" when none).
    pub fn text(&mut self, selector: &str) -> String {
        let s = json!(selector);
        self.eval(&format!(
            "(document.querySelector({s}) || {{}}).textContent || ''"
        ))
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Whether the element `selector` finds is shown (exists, and neither
    /// it nor an ancestor is hidden).
    pub fn shown(&mut self, selector: &str) -> bool {
        let s = json!(selector);
        self.eval(&format!(
            "(() => {{ const e = document.querySelector({s}); \
             return !!e && e.getClientRects().length > 0; }})()"
        )) == Value::Bool(true)
    }
}

/// A protocol error that says the page's document went away under the
/// command (it navigated), not that the command was wrong.
fn navigated(err: &Value) -> bool {
    let msg = err["message"].as_str().unwrap_or_default();
    [
        "navigated or closed",
        "Execution context was destroyed",
        "Cannot find context",
    ]
    .iter()
    .any(|m| msg.contains(m))
}

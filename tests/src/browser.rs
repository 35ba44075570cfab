//! A real headless Chromium, driven through ChromeDriver's WebDriver API
//! (W3C WebDriver: JSON over HTTP), with the standard-library client of
//! `tests::http`: no browser-automation crate, and nothing downloaded at
//! run time. Debian's `chromium` and `chromium-driver` packages provide
//! `/usr/bin/chromium` and `/usr/bin/chromedriver`; `require` installs them
//! with apt-get when they are missing and the tests run as root (as in CI,
//! whose `.ci/run` installs them first), else fails saying how.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::request;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Makes sure Chromium and ChromeDriver are there.
pub fn require() {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return;
    }
    crate::system::apt_install(&["chromium", "chromium-driver"], "the console's browser test");
}

/// A ChromeDriver process and one browser session in it; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

impl Browser {
    /// Starts ChromeDriver on a free loopback port and a headless Chromium
    /// of `width` × `height` pixels.
    pub fn start(width: u32, height: u32) -> Browser {
        require();
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && request(&base, "GET", "/status", None, None).json()["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not answer within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().expect("profile dir");
        // The flags keep Chromium from reaching for the network: this
        // machine's is closed, and the test must not depend on it.
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            }}
        });
        let answer = request(&base, "POST", "/session", None, Some(&capabilities.to_string()));
        assert_eq!(answer.status, 200, "chromedriver refused the session: {}", answer.body);
        let session = answer.json()["value"]["sessionId"].as_str().expect("a session id").to_owned();
        Browser { driver, base, session, _profile: profile }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        let path = format!("/session/{}{path}", self.session);
        let answer = request(&self.base, method, &path, None, body.as_deref());
        let value = answer.json()["value"].clone();
        assert_eq!(answer.status, 200, "WebDriver {method} {path}: {value}");
        value
    }

    pub fn open(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub fn script(&self, script: &str, args: Value) -> Value {
        self.call("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// The element `css` selects, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let path = format!("/session/{}/element", self.session);
        let body = json!({ "using": "css selector", "value": css }).to_string();
        let answer = request(&self.base, "POST", &path, None, Some(&body));
        let value = answer.json()["value"].clone();
        (answer.status == 200)
            .then(|| value[ELEMENT].as_str().unwrap_or_else(|| panic!("not an element: {value}")).to_owned())
    }

    /// Calls `method` `/element/{id}{suffix}` on the element `css` selects.
    /// A page that draws itself again may replace the element between the
    /// find and the call: it is found again, a few times.
    fn on_element(&self, css: &str, method: &str, suffix: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        for _ in 0..5 {
            let element = self.find(css).unwrap_or_else(|| panic!("nothing on the page matches {css}"));
            let path = format!("/session/{}/element/{element}{suffix}", self.session);
            let answer = request(&self.base, method, &path, None, body.as_deref());
            let value = answer.json()["value"].clone();
            if answer.status == 200 {
                return value;
            }
            assert_eq!(value["error"], "stale element reference", "WebDriver {method} {suffix} on {css}: {value}");
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{css} was replaced at every try");
    }

    /// Clicks the element `css` selects, as a user would (WebDriver moves
    /// the pointer there and clicks; it fails if something covers it).
    pub fn click(&self, css: &str) {
        self.on_element(css, "POST", "/click", Some(json!({})));
    }

    /// Types `text` into the element `css` selects.
    pub fn type_into(&self, css: &str, text: &str) {
        self.on_element(css, "POST", "/value", Some(json!({ "text": text })));
    }

    /// The text of the element `css` selects, as the user sees it.
    pub fn text(&self, css: &str) -> String {
        self.on_element(css, "GET", "/text", None).as_str().unwrap_or_default().to_owned()
    }

    /// Waits (at most `limit`) until `condition`, a JavaScript expression,
    /// is true in the page; panics with `what` and the page's text if not.
    pub fn wait_until(&self, what: &str, condition: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        let script = format!("return Boolean({condition});");
        loop {
            if self.script(&script, json!([])) == true {
                return;
            }
            if Instant::now() > deadline {
                let page = self.script("return document.body.innerText;", json!([]));
                panic!("{what}: not within {limit:?}; the page shows:\n{}", page.as_str().unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the window, written to `path`.
    pub fn screenshot(&self, path: &Path) -> PathBuf {
        let encoded = self.call("GET", "/screenshot", None);
        let png = data_encoding::BASE64.decode(encoded.as_str().expect("base64").as_bytes()).expect("a base64 PNG");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write the screenshot");
        path.to_owned()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(&self.base, "DELETE", &format!("/session/{}", self.session), None, None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

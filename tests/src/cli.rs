//! Running real `ferry` processes from tests: homes, commands with their
//! JSON output, and serving nodes on 127.0.0.1 stopped with SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The `ferry` binary next to this test binary, built once per test process
/// (a no-op when it is fresh, a rebuild when it is stale). Cargo sets
/// `CARGO_BIN_EXE_ferry` only for the `node` package's own tests, so this
/// builds into the target directory and profile this test binary was built
/// with, wherever `--target-dir` or `CARGO_TARGET_DIR` put them.
pub fn ferry_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_ferry).clone()
}

fn build_ferry() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join(format!("ferry{}", std::env::consts::EXE_SUFFIX));
    // `<target>/<profile>`, or `<target>/<triple>/<profile>` for a build with
    // `--target`; Cargo marks the target directory itself with CACHEDIR.TAG.
    let above = profile_dir.parent().expect("a target directory");
    let (target_dir, triple) = if above.join("CACHEDIR.TAG").exists() || above.parent().is_none() {
        (above, None)
    } else {
        (above.parent().expect("checked"), above.file_name())
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", "node", "--bin", "ferry", "--target-dir"]).arg(target_dir);
    // What Cargo sets for this test process describes this package, not
    // the build: a build script that watches one of these (ring watches
    // CARGO_MANIFEST_DIR) would see it change and rebuild half the graph.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || ["CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH", "CARGO_CRATE_NAME", "CARGO_BIN_NAME"].contains(&&*name)
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*name)
        {
            build.env_remove(&*name);
        }
    }
    match profile_dir.file_name().and_then(|p| p.to_str()) {
        Some("debug") => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(custom) => {
            build.args(["--profile", custom]);
        }
        None => panic!("no profile directory in {}", exe.display()),
    }
    if let Some(triple) = triple {
        build.arg("--target").arg(triple);
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "could not build ferry: {build:?}");
    assert!(binary.exists(), "{build:?} left no {}", binary.display());
    binary
}

/// Runs `command` to its end, failing the test if it takes over `limit`
/// (a command that hangs fails instead of hanging the suite).
pub fn within(mut command: Command, limit: Duration) -> Output {
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn ferry");
    let pid = child.id().to_string();
    let (tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match done.recv_timeout(limit) {
        Ok(output) => output.expect("wait for ferry"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("{command:?} did not finish within {} s", limit.as_secs());
        }
    }
}

/// A node's home directory.
pub struct Home {
    pub dir: PathBuf,
    pub name: String,
    /// The network namespace its commands run in (`ip netns exec`), if any.
    pub netns: Option<String>,
}

impl Home {
    /// Creates and initialises a home under `root`.
    pub fn init(root: &Path, name: &str) -> Home {
        let home = Home { dir: root.join(name), name: name.to_owned(), netns: None };
        home.ok(&["init"]);
        home
    }

    /// A home whose commands run inside the network namespace `netns`.
    pub fn init_in(root: &Path, name: &str, netns: &str) -> Home {
        let home = Home { dir: root.join(name), name: name.to_owned(), netns: Some(netns.to_owned()) };
        home.ok(&["init"]);
        home
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = match &self.netns {
            Some(netns) => {
                // `ip netns exec` execs ferry: the process keeps its pid.
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(ferry_binary());
                command
            }
            None => Command::new(ferry_binary()),
        };
        command.arg("--home").arg(&self.dir).args(args).env("RUST_LOG", "warn");
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run ferry")
    }

    /// Runs with `--json`, expects success, returns the JSON printed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(out.status.success(), "{}: ferry {args:?} failed: {}", self.name, String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{}: ferry {args:?} printed no JSON ({e}): {}", self.name, String::from_utf8_lossy(&out.stdout))
        })
    }

    /// Runs, expects success.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{}: ferry {args:?} failed: {}", self.name, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs, expects failure, returns the one-line reason.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{}: ferry {args:?} should have failed", self.name);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let last = stderr.lines().rfind(|l| l.starts_with("ferry:")).unwrap_or_default().to_owned();
        assert!(!last.is_empty(), "{}: no one-line reason in {stderr:?}", self.name);
        last
    }

    pub fn peer_id(&self) -> String {
        self.json(&["id"])["peer_id"].as_str().expect("peer id").to_owned()
    }

    /// Starts `ferry serve` on a loopback port, without mDNS.
    pub fn serve(&self) -> Server {
        self.serve_with(&[], &[])
    }

    pub fn serve_with(&self, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut args = vec!["--json", "serve", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"];
        args.extend_from_slice(extra);
        Server::start(self, self.command(&args), env)
    }

    /// Writes `ferry.toml`.
    pub fn configure(&self, toml: &str) {
        std::fs::write(self.dir.join("ferry.toml"), toml).expect("write ferry.toml");
    }
}

/// A running `ferry serve`.
pub struct Server {
    child: Child,
    pub address: String,
    pub events: mpsc::Receiver<serde_json::Value>,
    name: String,
}

impl Server {
    pub fn start(home: &Home, mut command: Command, env: &[(&str, &str)]) -> Server {
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn ferry serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                    && tx.send(value).is_err()
                {
                    return;
                }
            }
        });
        let first = events.recv_timeout(Duration::from_secs(30)).expect("ferry serve said nothing within 30 s");
        assert_eq!(first["event"], "listening", "{first}");
        let address = first["address"].as_str().expect("address").to_owned();
        Server { child, address, events, name: home.name.clone() }
    }

    /// Waits for an event of this kind (other events are skipped), for 60 s
    /// in all however many others come.
    pub fn wait_for(&self, kind: &str) -> serde_json::Value {
        self.wait_until(&format!("of kind {kind}"), |event| event["event"] == kind)
    }

    /// Waits for the first event `wanted` accepts (others are skipped), for
    /// 60 s in all.
    pub fn wait_until(&self, what: &str, wanted: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let event =
                self.events.recv_timeout(left).unwrap_or_else(|_| panic!("{}: no event {what} within 60 s", self.name));
            if wanted(&event) {
                return event;
            }
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, …) to the serving process.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args([&format!("-{name}"), &pid]).status().expect("run kill");
        assert!(status.success(), "{}: kill -{name} failed", self.name);
    }

    /// SIGKILL: the process dies where it stands, as in a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to end, and for a clean exit.
    pub fn wait_stopped(mut self) {
        let status = self.child.wait().expect("wait for ferry serve");
        assert!(status.success(), "{}: ferry serve exited with {status}", self.name);
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().expect("wait for ferry serve");
        assert!(status.success(), "{}: ferry serve exited with {status}", self.name);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

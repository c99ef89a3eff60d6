//! A lab of hosts on one machine: network namespaces joined by a bridge, one node process each.
//!
//! [`Lab::new`] makes a bridge namespace and N host namespaces, each with an `eth0` (a veth
//! pair whose both ends are created inside namespaces, so the root namespace never sees a
//! link), `10.77.0.<i>/24`, `lo` up and a multicast route. mDNS and every other multicast stay
//! on that bridge. [`Lab::spawn`] runs a node process inside a namespace: the test binary
//! itself, re-run with `--exact <entry> --ignored` and an environment that makes that entry
//! test act as a node. A node talks to the test in lines: it prints `@mb ...` lines on stdout
//! and reads commands on stdin.
//!
//! Dropping the lab (also while a test panics) kills every node process, waits for it, and
//! deletes every namespace, which deletes their links. Names carry the test process's id and
//! a tag per test, so parallel tests and parallel runs do not collide; namespaces left by a run
//! that was itself killed are swept by the next one.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The prefix of every namespace a lab makes.
const PREFIX: &str = "mbt";

/// The prefix of a node's protocol lines on stdout (libtest prints its own lines there too).
pub(crate) const LINE: &str = "@mb ";

/// The environment variable that makes the entry test run a node.
pub(crate) const NODE_ENV: &str = "MESHBUS_NETNS_NODE";

/// Whether this process may make namespaces; if not, says so on stderr (past libtest's
/// capture) and returns false.
pub(crate) fn can_run(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let ip = Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if root && ip {
        return true;
    }
    let why = if root {
        "needs the `ip` command (iproute2)"
    } else {
        "needs root to create network namespaces"
    };
    // Where CI runs, the machine is meant to run it: a skip there would pass silently.
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{test}: CI is set, and this test cannot run here: it {why}");
    }
    let _ = writeln!(std::io::stderr(), "{test}: skipped: {why}");
    false
}

/// Runs `ip args...`, failing with its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Deletes namespaces of labs whose test process no longer runs.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// What a node process is started with.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// The name of the `#[ignore]`d test that runs a node when [`NODE_ENV`] is set.
    pub(crate) entry: &'static str,
    /// Environment for it (the lab adds `MB_HOST_ID` and `MB_IP` unless given).
    pub(crate) env: Vec<(String, String)>,
}

impl Spec {
    pub(crate) fn new(entry: &'static str) -> Self {
        Spec {
            entry,
            env: Vec::new(),
        }
    }

    pub(crate) fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }
}

/// Namespaces on a bridge, and the node processes in them.
pub(crate) struct Lab {
    bridge: String,
    hosts: Vec<String>,
    nodes: Vec<Node>,
}

impl Lab {
    /// Makes `n` hosts on a bridge; `tag` (a few letters) tells this test's namespaces apart.
    ///
    /// # Panics
    ///
    /// When a namespace or link cannot be made (what was made is deleted first).
    pub(crate) fn new(tag: &str, n: usize) -> Lab {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        sweep_stale();
        let base = format!(
            "{PREFIX}{}-{tag}{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            bridge: format!("{base}-br"),
            hosts: Vec::new(),
            nodes: Vec::new(),
        };
        if let Err(e) = lab.build(&base, n) {
            panic!("could not build the namespaces: {e}");
        }
        lab
    }

    fn build(&mut self, base: &str, n: usize) -> Result<(), String> {
        let br = self.bridge.clone();
        ip(&["netns", "add", &br])?;
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        for i in 1..=n {
            let ns = format!("{base}-h{i}");
            ip(&["netns", "add", &ns])?;
            self.hosts.push(ns.clone());
            let port = format!("v{i}");
            // Both ends are created inside namespaces: nothing touches the root namespace.
            ip(&[
                "link", "add", &port, "netns", &br, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let addr = format!("{}/24", self.ip(i - 1));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        }
        Ok(())
    }

    /// Host `i`'s (0-based) IPv4 address.
    pub(crate) fn ip(&self, i: usize) -> String {
        format!("10.77.0.{}", i + 1)
    }

    /// Host `i`'s own host id: namespaces share `/etc/machine-id`, so the lab hands each its
    /// own for the `Machine` scope.
    pub(crate) fn host_id(&self, i: usize) -> String {
        format!("{}-host{}", self.bridge.trim_end_matches("-br"), i + 1)
    }

    /// Unplugs host `i` from the bridge (its port goes down): its node falls silent, with no
    /// connection closed, as when a machine loses its network.
    pub(crate) fn unplug(&self, i: usize) {
        let port = format!("v{}", i + 1);
        if let Err(e) = ip(&["-n", &self.bridge, "link", "set", &port, "down"]) {
            panic!("unplugging host {i}: {e}");
        }
    }

    /// Starts a node process in host `i`'s namespace; returns its index for [`node`](Self::node).
    ///
    /// # Panics
    ///
    /// When the process cannot be started.
    pub(crate) fn spawn(&mut self, i: usize, name: &str, spec: Spec) -> usize {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i]])
            .arg(exe)
            .args([spec.entry, "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(NODE_ENV, "1")
            .env("MB_NAME", name)
            .env("MB_HOST_ID", self.host_id(i))
            .env("MB_IP", self.ip(i))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting node {name}: {e}"));
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().map(|out| {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    // libtest's "test name ... " may stand before the first line.
                    if let Some(at) = line.find(LINE) {
                        if tx.send(line[at + LINE.len()..].to_owned()).is_err() {
                            break;
                        }
                    }
                }
            })
        });
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let err = child.stderr.take().map(|mut e| {
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = e.read_to_end(&mut buf);
                if let Ok(mut s) = stderr.lock() {
                    s.extend(String::from_utf8_lossy(&buf).lines().map(str::to_owned));
                }
            })
        });
        self.nodes.push(Node {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            seen: Vec::new(),
            stderr,
            readers: out.into_iter().chain(err).collect(),
        });
        self.nodes.len() - 1
    }

    /// The node started `k`-th.
    pub(crate) fn node(&mut self, k: usize) -> &mut Node {
        &mut self.nodes[k]
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for node in &mut self.nodes {
            node.stop();
            if panicking {
                node.dump();
            }
        }
        for ns in self.hosts.iter().chain([&self.bridge]) {
            if let Err(e) = ip(&["netns", "del", ns]) {
                let _ = writeln!(std::io::stderr(), "cleanup: {e}");
            }
        }
    }
}

/// A node process and its lines.
pub(crate) struct Node {
    pub(crate) name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every line read so far, for failure messages.
    seen: Vec<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Node {
    /// Writes one command line to the node.
    pub(crate) fn send(&mut self, line: &str) {
        let name = &self.name;
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("{name}: stdin closed"));
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{name}: writing `{line}`: {e}"));
    }

    /// Reads lines until one satisfies `pred` and returns it; the lines before it are kept in
    /// the log only.
    ///
    /// # Panics
    ///
    /// After `timeout`, or when the node's output ends first.
    pub(crate) fn expect(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no {what} within {timeout:?}; lines: {:#?}",
                        self.name, self.seen
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!(
                        "{}: output ended before {what}; lines: {:#?}",
                        self.name, self.seen
                    )
                }
            }
        }
    }

    /// Like [`expect`](Self::expect), for a line starting with `prefix`; returns the rest.
    /// The last line read so far that starts with `prefix` (read by any wait, including one
    /// that was looking for another line), without it.
    pub(crate) fn last_with_prefix(&self, prefix: &str) -> Option<&str> {
        self.seen.iter().rev().find_map(|l| l.strip_prefix(prefix))
    }

    pub(crate) fn expect_prefix(&mut self, prefix: &str, timeout: Duration) -> String {
        let line = self.expect(&format!("`{prefix}` line"), timeout, |l| {
            l.starts_with(prefix)
        });
        line[prefix.len()..].trim().to_owned()
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself, up to `timeout`; returns whether it did.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        // Bounded: the lines channel disconnects when the process closes stdout.
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) => {}
                Err(_) => return false,
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = self.child.wait();
                    return true;
                }
            }
        }
        false
    }

    fn stop(&mut self) {
        // Closing stdin asks the node to stop; a kill makes sure of it.
        self.stdin = None;
        self.kill();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    fn dump(&self) {
        let mut err = std::io::stderr();
        let _ = writeln!(err, "--- node {}: lines {:#?}", self.name, self.seen);
        if let Ok(lines) = self.stderr.lock() {
            for l in lines.iter().rev().take(40).rev() {
                let _ = writeln!(err, "--- node {} stderr: {l}", self.name);
            }
        }
    }
}

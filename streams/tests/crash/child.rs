//! The stream host as a child process: this test binary run again in host mode, its stdout
//! read line by line, killed (SIGKILL) and reaped when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use tokio::sync::mpsc;

use super::{FsyncPolicy, BOUND, DIR_ENV, FSYNC_ENV, SEED_ENV};

/// A host child, killed and reaped when dropped, whose stdout arrives line by line.
pub(crate) struct HostProc {
    pub(crate) child: Child,
    /// Kept open: the child stops when it closes.
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every line read so far, for failure messages.
    seen: Vec<String>,
}

impl HostProc {
    /// Starts a host of stream `orders` in `dir` with `fsync`, dialing the node at `seed`;
    /// returns once it printed the address it listens on (its stream is open by then).
    pub(crate) async fn start(seed: &str, dir: &Path, fsync: FsyncPolicy) -> (HostProc, String) {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut cmd = Command::new(exe);
        cmd.args(["--exact", "crash_host", "--nocapture", "--test-threads=1"])
            .env(SEED_ENV, seed)
            .env(DIR_ENV, dir)
            .env(FSYNC_ENV, super::policy_name(fsync))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawning the host child");
        let stdout = child.stdout.take().expect("a piped stdout");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel(64);
        // Ends when the child's stdout closes (it exits or is killed).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        let mut host = HostProc {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        };
        let addr = host.line_after("host listening ").await;
        (host, addr)
    }

    /// Reads lines until one contains `marker` (libtest may print before it on the same
    /// line), and returns what follows it.
    pub(crate) async fn line_after(&mut self, marker: &str) -> String {
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => panic!(
                    "the host's output ended before {marker:?}: {:#?}",
                    self.seen
                ),
                Err(_) => panic!("timed out waiting for {marker:?}; so far: {:#?}", self.seen),
            };
            eprintln!("[host] {line}");
            self.seen.push(line.clone());
            if let Some((_, rest)) = line.split_once(marker) {
                return rest.trim().to_owned();
            }
        }
    }

    /// Kill -9: `Child::kill` sends SIGKILL to this child's PID (and to no other process: once
    /// the child was reaped, it does nothing). Reaps it.
    pub(crate) fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL to the host child");
        let status = self.child.wait().expect("reaping the host child");
        assert!(!status.success(), "killed, yet {status}");
    }

    /// Closes the child's stdin and waits for it to shut its bus down and exit 0.
    pub(crate) async fn stop(mut self) {
        self.stdin = None;
        assert_eq!(self.line_after("host stopped").await, "");
        let status = self.child.wait().expect("waiting for the host child");
        assert!(status.success(), "the host child: {status}");
    }
}

impl Drop for HostProc {
    fn drop(&mut self) {
        // SIGKILL (nothing once it has been reaped), then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

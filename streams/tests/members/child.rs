//! A member of consumer `billing` as a child process: this test binary run again in member
//! mode, its stdout read line by line and parsed into [`Line`]s, killed (SIGKILL) and reaped
//! when dropped.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};

use tokio::sync::mpsc;

use super::{Role, BOUND, MARK, ROLE_ENV, SEED_ENV};

/// What a member says, one line each (after [`MARK`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// It joined the consumer.
    Ready,
    /// It handled the record at `offset` (whose body says `id`), delivered for the
    /// `deliveries`th time; an ack may follow.
    Handled {
        offset: u64,
        deliveries: u32,
        id: u64,
    },
    /// Its ack of `offset` was answered `Ok`.
    Acked(u64),
    /// Its ack of `offset` was refused (the record was no longer pending).
    Refused(u64, String),
    /// A pull failed.
    PullError(String),
    /// It handled its last record without acking it and waits to be killed.
    Holding,
    /// It handled its budget and waits for `go`.
    Paused,
    /// It shut down.
    Stopped,
}

impl Line {
    fn parse(text: &str) -> Option<Line> {
        let (_, rest) = text.split_once(MARK)?;
        let mut words = rest.split_whitespace();
        let line = match words.next()? {
            "ready" => Line::Ready,
            "handled" => Line::Handled {
                offset: words.next()?.parse().ok()?,
                deliveries: words.next()?.parse().ok()?,
                id: words.next()?.parse().ok()?,
            },
            "acked" => Line::Acked(words.next()?.parse().ok()?),
            "refused" => Line::Refused(
                words.next()?.parse().ok()?,
                words.collect::<Vec<_>>().join(" "),
            ),
            "pull-error" => Line::PullError(words.collect::<Vec<_>>().join(" ")),
            "holding" => Line::Holding,
            "paused" => Line::Paused,
            "stopped" => Line::Stopped,
            _ => return None,
        };
        Some(line)
    }
}

/// A member child, killed and reaped when dropped.
pub(crate) struct MemberProc {
    pub(crate) name: &'static str,
    child: Child,
    /// Kept open: the member stops when it closes.
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    /// The last lines read, for failure messages.
    recent: Vec<String>,
}

impl MemberProc {
    /// Starts member `name` in `role`, dialing the host at `seed`; returns once it joined
    /// the consumer.
    pub(crate) async fn start(name: &'static str, role: Role, seed: &str) -> MemberProc {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut child = Command::new(exe)
            .args(["--exact", "member_child", "--nocapture", "--test-threads=1"])
            .env(SEED_ENV, seed)
            .env(ROLE_ENV, role.name())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning a member child");
        let stdout = child.stdout.take().expect("a piped stdout");
        let stdin = child.stdin.take();
        // Unbounded: a member is never slowed down by the test not reading its lines yet.
        let (tx, lines) = mpsc::unbounded_channel();
        // Ends when the child's stdout closes (it exits or is killed).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut member = MemberProc {
            name,
            child,
            stdin,
            lines,
            recent: Vec::new(),
        };
        let first = member.next().await;
        assert_eq!(
            first,
            Some(Line::Ready),
            "member {name}: {:#?}",
            member.recent
        );
        member
    }

    /// The next line the member says; `None` once its output ended (it exited or was
    /// killed). Fails the test after [`BOUND`] without one.
    pub(crate) async fn next(&mut self) -> Option<Line> {
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let text = match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(text)) => text,
                Ok(None) => return None,
                Err(_) => panic!(
                    "member {}: no line for {BOUND:?}; the last ones: {:#?}",
                    self.name, self.recent
                ),
            };
            if self.recent.len() == 20 {
                self.recent.remove(0);
            }
            self.recent.push(text.clone());
            if let Some(line) = Line::parse(&text) {
                return Some(line);
            }
        }
    }

    /// Sends `text` as a line to the member's stdin.
    pub(crate) fn say(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("the member's stdin is open");
        writeln!(stdin, "{text}").expect("writing to a member");
        stdin.flush().expect("writing to a member");
    }

    /// Kill -9: `Child::kill` sends SIGKILL to this child's PID (and to no other process:
    /// once the child was reaped, it does nothing). Reaps it.
    pub(crate) fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL to a member");
        let status = self.child.wait().expect("reaping a member");
        assert!(!status.success(), "killed, yet {status}");
    }

    /// Closes the member's stdin: it stops (see [`wait`](Self::wait)).
    pub(crate) fn close(&mut self) {
        self.stdin = None;
    }

    /// Reaps the member once its output ended; asserts it exited 0.
    pub(crate) fn wait(&mut self) {
        let status = self.child.wait().expect("waiting for a member");
        assert!(status.success(), "member {}: {status}", self.name);
    }
}

impl Drop for MemberProc {
    fn drop(&mut self) {
        // SIGKILL (nothing once it has been reaped), then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

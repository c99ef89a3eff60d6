//! One measured process: started with its placement, fed commands, its results read back.

use super::*;

/// A child process of ours: its output lines arrive on a channel; dropping it kills it (by its
/// handle) and reaps it.
pub(super) struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    pub(super) fn spawn(
        name: &str,
        role_args: &[String],
        cpu: Option<usize>,
    ) -> Result<Proc, String> {
        let exe = std::env::current_exe().map_err(|e| format!("the path of this program: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.args(role_args);
        if let Some(cpu) = cpu {
            cmd.args(["--cpu".to_owned(), cpu.to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start {name}: {e}"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| format!("{name} has no piped stdout"))?;
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc {
            name: name.to_owned(),
            child,
            stdin,
            lines,
        })
    }

    pub(super) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next line starting with `prefix` (others are ignored), within `bound`.
    pub(super) fn wait_line(&self, prefix: &str, bound: Duration) -> Result<String, String> {
        let until = Instant::now() + bound;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Ok(line),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("{}: no `{prefix}` within {bound:?}", self.name))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("{}: exited before `{prefix}`", self.name))
                }
            }
        }
    }

    /// Every `RESULT` line up to `DONE`, within `bound`.
    pub(super) fn results(&self, bound: Duration) -> Result<Vec<Vec<String>>, String> {
        let until = Instant::now() + bound;
        let mut out = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == "DONE" => return Ok(out),
                Ok(line) if line.starts_with("RESULT ") => {
                    out.push(line.split_whitespace().skip(1).map(str::to_owned).collect())
                }
                Ok(_) => {}
                Err(_) => return Err(format!("{}: no DONE within {bound:?}", self.name)),
            }
        }
    }

    pub(super) fn say(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }

    pub(super) fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with the pid of a child we spawned and have not reaped yet.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Closing stdin asks a server to stop; give it a moment, then kill it by its handle.
        drop(self.stdin.take());
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

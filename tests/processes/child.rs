//! Child processes for the process tests: spawned, read line by line, killed and reaped when
//! dropped; and the examples, built when missing.

use super::*;

/// A child process, killed and reaped when dropped, whose stdout arrives line by line.
pub(crate) struct ChildProc {
    pub(crate) name: String,
    pub(crate) child: Child,
    /// Kept open so the child can watch it; dropping it tells a `serve` node to stop.
    pub(crate) stdin: Option<ChildStdin>,
    /// Lines of stdout; closed at its end.
    pub(crate) lines: mpsc::Receiver<String>,
    /// Every line read so far, for failure messages.
    pub(crate) seen: Vec<String>,
}

impl ChildProc {
    pub(crate) fn spawn(name: &str, mut cmd: Process) -> ChildProc {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name} ({cmd:?}): {e}"));
        let stdout = child.stdout.take().expect("a piped stdout");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel(1024);
        // Reads until the child closes stdout (it exits or is killed); bounded by that.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        ChildProc {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line, or `None` at the end of stdout.
    pub(crate) async fn next_line(&mut self, deadline: tokio::time::Instant) -> Option<String> {
        match tokio::time::timeout_at(deadline, self.lines.recv()).await {
            Ok(line) => {
                if let Some(line) = &line {
                    eprintln!("[{}] {line}", self.name);
                    self.seen.push(line.clone());
                }
                line
            }
            Err(_) => panic!(
                "{}: timed out waiting for output; so far: {:#?}",
                self.name, self.seen
            ),
        }
    }

    /// Reads lines until one contains `marker`, and returns what follows it. (Not only at the
    /// start: libtest prints `test child_node ... ` before the child node's first line.)
    pub(crate) async fn line_after(&mut self, marker: &str) -> String {
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            match self.next_line(deadline).await {
                Some(line) => {
                    if let Some((_, rest)) = line.split_once(marker) {
                        return rest.to_owned();
                    }
                }
                None => panic!(
                    "{}: output ended before a line with {marker:?}: {:#?}",
                    self.name, self.seen
                ),
            }
        }
    }

    /// Reads stdout to its end and waits for the exit; the whole output and the status.
    pub(crate) async fn finish(mut self) -> (ExitStatus, Vec<String>) {
        let deadline = tokio::time::Instant::now() + RUN_BOUND;
        while self.next_line(deadline).await.is_some() {}
        // Stdout is closed, so the child is exiting: this wait is short.
        let status = self.child.wait().expect("waiting for the child");
        (status, std::mem::take(&mut self.seen))
    }

    /// Closes the child's stdin.
    pub(crate) fn close_stdin(&mut self) {
        self.stdin = None;
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        // SIGKILL (a no-op error if it has exited), then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/<profile>/`, from this test's binary in `target/<profile>/deps/`.
pub(crate) fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("the deps directory");
    deps.parent().expect("the profile directory").to_path_buf()
}

/// The binary of example `name`, built if it is missing.
pub(crate) async fn example(name: &str) -> PathBuf {
    let dir = profile_dir();
    let path = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() {
        return path;
    }
    // Not built by this cargo invocation (`cargo test --test processes`): build it with the
    // same cargo, profile and target directory, bounded in time.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = tokio::process::Command::new(cargo);
    cmd.args(["build", "--quiet", "--features", "tcp", "--example", name])
        .arg("--manifest-path")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(target) = dir.parent() {
        cmd.arg("--target-dir").arg(target);
    }
    match dir.file_name().and_then(OsStr::to_str) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    eprintln!("building example {name}: {cmd:?}");
    let mut build = cmd.spawn().expect("spawning cargo");
    let status = match tokio::time::timeout(BUILD_BOUND, build.wait()).await {
        Ok(status) => status.expect("waiting for cargo"),
        Err(_) => {
            let _ = build.kill().await;
            panic!("building example {name} took over {BUILD_BOUND:?}");
        }
    };
    assert!(status.success(), "building example {name}: {status}");
    assert!(path.is_file(), "{} missing after the build", path.display());
    path
}

pub(crate) async fn run_example(name: &str, args: &[&str]) -> ChildProc {
    let mut cmd = Process::new(example(name).await);
    cmd.args(args);
    ChildProc::spawn(name, cmd)
}

//! A host in a process of its own: this program run as `stream_bench host <kind> <dir>`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshbus_core::{Context, HandlerError};
use meshbus_streams::{FsyncPolicy, StreamConfig, StreamsBuilderExt};

use crate::{node, runtime};

/// What the child hosts: `memory` = the stream `big`; `publish` = the streams `never` and
/// `always` and the `Sink` command handler.
pub(crate) fn host_process(kind: &str, dir: &Path) {
    let rt = runtime();
    rt.block_on(async {
        let builder = match kind {
            "memory" => {
                node("host").stream(StreamConfig::new("big").dir(dir).fsync(FsyncPolicy::Never))
            }
            "publish" => crate::publish::host_node(dir),
            other => {
                eprintln!("stream_bench host: unknown kind `{other}`");
                std::process::exit(2);
            }
        };
        let host = builder.start().await.expect("host starts");
        println!("READY {}", crate::listening(&host));
        let _ = std::io::stdout().flush();
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await;
        let _ = host.shutdown().await;
    });
}

/// The no-op handler of the `publish` host's `Sink` command.
pub(crate) async fn sink(_: crate::publish::Sink, _ctx: Context) -> Result<(), HandlerError> {
    Ok(())
}

/// A running host process.
#[derive(Debug)]
pub(crate) struct HostChild {
    child: Child,
    /// The address its bus listens on.
    pub(crate) addr: String,
    /// Its process id.
    pub(crate) pid: String,
}

impl HostChild {
    /// Starts `stream_bench host <kind> <dir>` and waits for its `READY` line.
    pub(crate) fn spawn(kind: &str, dir: &Path) -> HostChild {
        let exe = std::env::current_exe().expect("this program");
        let mut child = Command::new(exe)
            .arg("host")
            .arg(kind)
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the host process");
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let Some(addr) = line.trim().strip_prefix("READY ").map(str::to_owned) else {
            eprintln!("stream_bench: the host process did not start: {line:?}");
            let _ = child.kill();
            let _ = child.wait();
            std::process::exit(3);
        };
        let pid = child.id().to_string();
        HostChild { child, addr, pid }
    }

    /// Closes its standard input (it shuts down) and waits for it, killing it after 20 s.
    pub(crate) fn finish(mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

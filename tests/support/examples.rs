//! The built example binaries, run as a user runs them: separate processes configured
//! only by their arguments and environment.

use std::io::{BufRead as _, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a process may take to start, answer or exit (a debug build on a busy box).
pub const PROCESS_WAIT: Duration = Duration::from_secs(60);

/// `target/<profile>/examples/NAME`, which `cargo test` builds before the tests run.
pub fn example_binary(name: &str) -> PathBuf {
    // The test binary lives in target/<profile>/deps; examples in target/<profile>/examples.
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run the whole suite (`cargo test --workspace`), which builds the examples",
        bin.display()
    );
    bin
}

/// A running example: its output is read on threads (so a full pipe never blocks it),
/// and it is killed if the test ends before it does.
pub struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr: Option<JoinHandle<String>>,
}

/// What a finished process left.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Process {
    pub fn spawn(name: &str, args: &[&str], env: Vec<(&str, String)>) -> Self {
        let mut cmd = Command::new(example_binary(name));
        cmd.env_clear()
            .args(args)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{name} starts: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Process {
            child,
            lines,
            stdout: Vec::new(),
            stderr: Some(stderr),
        }
    }

    /// The next stdout line, waiting at most [`PROCESS_WAIT`]; `None` at end of output.
    pub fn next_line(&mut self) -> Option<String> {
        match self.lines.recv_timeout(PROCESS_WAIT) {
            Ok(line) => {
                self.stdout.push(line.clone());
                Some(line)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.kill();
                panic!("no output within {PROCESS_WAIT:?}: {}", self.stderr_text());
            }
        }
    }

    /// Sends SIGTERM (what `docker stop` sends), then waits for the exit.
    pub fn terminate(self) -> Finished {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            sent.as_ref().is_ok_and(|s| s.success()),
            "kill -TERM {pid}: {sent:?}"
        );
        self.wait()
    }

    /// Waits at most [`PROCESS_WAIT`] for the exit, then for the rest of the output.
    pub fn wait(mut self) -> Finished {
        let deadline = Instant::now() + PROCESS_WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "still running after {PROCESS_WAIT:?}: {}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while self.next_line().is_some() {}
        Finished {
            status,
            stdout: self.stdout.join("\n"),
            stderr: self.stderr_text(),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the process wrote to stderr (after it ended or was killed).
    pub fn stderr_text(&mut self) -> String {
        self.stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

impl Process {
    /// Starts a server example and waits for its `listening on http://ADDR` line.
    pub fn serve(name: &str, args: &[&str], env: Vec<(&str, String)>) -> (Self, String) {
        let mut process = Self::spawn(name, args, env);
        let first = process.next_line().unwrap_or_default();
        match first.strip_prefix("listening on ") {
            Some(url) => (process, url.to_owned()),
            None => panic!(
                "{name}: no address line: {first:?}\n{}",
                process.stderr_text()
            ),
        }
    }
}

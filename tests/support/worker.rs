//! The real `cdc-sink` binary as a child process: started with a connector file, stopped with
//! SIGTERM or killed with SIGKILL, its log kept for assertions.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::servers::kafka;

pub struct Worker {
    child: Child,
    pub log: PathBuf,
}

/// Writes `config` as connector `name` to a temporary file.
pub fn connector_file(name: &str, config: &Value) -> PathBuf {
    let path = super::scratch().join(format!("{name}-{}.json", fastrand::u32(..)));
    let body = serde_json::json!({"name": name, "config": config});
    std::fs::write(&path, serde_json::to_vec_pretty(&body).unwrap()).unwrap();
    path
}

impl Worker {
    /// Starts a worker on the shared Kafka with the given connector file.
    pub fn start(connector: &PathBuf) -> Worker {
        Worker::start_with(&[connector], &[])
    }

    /// Starts a worker running several connectors, with extra environment variables. Each
    /// worker has its own state directory and REST port unless `env` sets them.
    pub fn start_with(connectors: &[&PathBuf], env: &[(&str, &str)]) -> Worker {
        Worker::start_configured(None, connectors, env)
    }

    /// [`Worker::start_with`] with worker settings from the TOML file `config` (`--config`);
    /// `env` still overrides them.
    pub fn start_configured(
        config: Option<&std::path::Path>,
        connectors: &[&PathBuf],
        env: &[(&str, &str)],
    ) -> Worker {
        Worker::spawn(config, connectors, env, None)
    }

    /// [`Worker::start_with`] in directory `dir` (where relative `${file:…}` paths lead).
    pub fn start_in(dir: &std::path::Path, env: &[(&str, &str)]) -> Worker {
        Worker::spawn(None, &[], env, Some(dir))
    }

    fn spawn(
        config: Option<&std::path::Path>,
        connectors: &[&PathBuf],
        env: &[(&str, &str)],
        dir: Option<&std::path::Path>,
    ) -> Worker {
        let log = super::scratch().join(format!("cdc-sink-worker-{}.log", fastrand::u32(..)));
        let out = File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdc-sink"));
        cmd.arg("run");
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        for c in connectors {
            cmd.arg("--connector").arg(c);
        }
        let state = super::scratch().join(format!("cdc-sink-state-{}", fastrand::u32(..)));
        cmd.env("CDC_SINK_KAFKA__BOOTSTRAP_SERVERS", kafka())
            .env("CDC_SINK_REST__LISTEN", "127.0.0.1:0")
            .env("CDC_SINK_WORKER__STATE_DIR", &state)
            .env("CDC_SINK_WORKER__OFFSET_FLUSH_INTERVAL_MS", "500")
            .env("RUST_LOG", "info,cdc_sink=debug,librdkafka=warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting cdc-sink");
        Worker { child, log }
    }

    /// The REST API's base URL, once the worker listens.
    pub fn rest_url(&mut self) -> String {
        let line = self.wait_log("REST API listening on ", Duration::from_secs(60));
        let at = line.find("http://").expect("an address in the line");
        line[at..].split_whitespace().next().unwrap().to_string()
    }

    /// Whether the process has exited, and how.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `lines` lines of the worker's log, for a failure's message.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the log contains `needle`; panics with the log after `timeout`.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let text = self.log_text();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            if start.elapsed() > timeout {
                panic!("`{needle}` not in the worker log after {timeout:?}:\n{text}");
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("worker exited ({st}) before logging `{needle}`:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no flush, no commit, no goodbye.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(mut self) -> ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!(
                    "worker did not stop within 60s after SIGTERM:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// CPU time (user and system) the worker has used so far, in seconds (from /proc).
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name, which is in parentheses: utime is the 12th, stime
        // the 13th, in clock ticks.
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let n = |i: usize| fields[i].parse::<f64>().unwrap();
        (n(11) + n(12)) / ticks
    }

    /// Resident set size in KiB (from /proc).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! What the tests that run `flowgate collector` share: starting it on free
//! ports, and plain HTTP to its API (std only, so the tests check the wire).

#![allow(dead_code)] // Each test binary uses its own part.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

pub const FLOWGATE: &str = env!("CARGO_BIN_EXE_flowgate");

/// A running `flowgate collector`, killed when dropped.
pub struct Collector {
    child: Child,
    /// `http://ADDR` of the gRPC ingest.
    pub grpc: String,
    /// `http://ADDR` of the API and dashboard.
    pub http: String,
}

impl Collector {
    /// Starts it on free loopback ports with `cluster` and `data`, and waits
    /// until it has loaded the cluster (`/readyz`).
    pub fn start(cluster: &Path, data: &Path) -> Result<Collector> {
        Self::start_with(cluster, data, &[])
    }

    /// [`Collector::start`] with more command-line arguments.
    pub fn start_with(cluster: &Path, data: &Path, extra: &[&str]) -> Result<Collector> {
        let mut child = Command::new(FLOWGATE)
            .arg("collector")
            .arg("--cluster")
            .arg(cluster)
            .args([
                "--grpc-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .context("start flowgate collector")?;
        let stdout = child.stdout.take().context("collector stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut grpc, mut http) = (None, None);
        while grpc.is_none() || http.is_none() {
            let line = lines
                .next()
                .context("the collector exited before printing its addresses")??;
            if let Some(addr) = line.strip_prefix("grpc listening on ") {
                grpc = Some(format!("http://{addr}"));
            } else if let Some(addr) = line.strip_prefix("http listening on ") {
                http = Some(format!("http://{addr}"));
            }
        }
        let collector = Collector {
            child,
            grpc: grpc.unwrap_or_default(),
            http: http.unwrap_or_default(),
        };
        collector.wait_ready()?;
        Ok(collector)
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http("GET", &self.http, "/readyz", None) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{}/readyz never answered 200", self.http);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `flowgate replay FILE` into this collector; returns its stdout.
    pub fn replay(&self, file: &Path, extra: &[&str]) -> Result<String> {
        let mut args = vec![
            "replay",
            file.to_str().context("path")?,
            "--collector",
            &self.grpc,
        ];
        args.extend_from_slice(extra);
        succeed(&args)
    }

    /// SIGKILL: the process gets no chance to flush or say goodbye.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Collector {
    /// SIGTERM (how Kubernetes stops a pod), then waits up to 30 s for the
    /// process to exit by itself.
    pub fn terminate(mut self) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status()?;
        ensure!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("the collector did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn flowgate(args: &[&str]) -> Result<Output> {
    Ok(Command::new(FLOWGATE)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()?)
}

/// Runs `flowgate ARGS`, which must succeed; returns its stdout.
pub fn succeed(args: &[&str]) -> Result<String> {
    let out = flowgate(args)?;
    ensure!(
        out.status.success(),
        "flowgate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// One HTTP/1.1 request; returns the status and the (de-chunked) body.
pub fn http(method: &str, base: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
    let authority = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        // No Content-Type: the API must not need one (curl -d sends a form's).
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)?
    } else {
        rest.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, tail) = rest.split_once("\r\n").context("chunk size")?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(tail.get(..size).context("short chunk")?);
        rest = tail.get(size + 2..).context("chunk end")?;
    }
}

/// `POST /api/v1/query`; the rows of a 200 answer.
pub fn sql(base: &str, query: &str) -> Result<Vec<Value>> {
    let body = serde_json::json!({ "sql": query }).to_string();
    let (status, text) = http("POST", base, "/api/v1/query", Some(&body))?;
    ensure!(status == 200, "{query}: HTTP {status}: {text}");
    let answer: Value = serde_json::from_str(&text)?;
    Ok(answer["rows"].as_array().context("rows")?.clone())
}

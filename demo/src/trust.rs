//! The demo runs as a cluster should: the probe streams to the collector
//! over mutual TLS with certificates made by `flowgate certs`, and the API
//! wants a bearer token, written where the person running the demo (the
//! user behind `sudo`, if any) can read it and nobody else can.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::DemoError;

/// Where `flowgate demo` writes its API token unless told otherwise: under
/// /run (root's, so no other user can plant a file there first).
pub const DEFAULT_TOKEN_FILE: &str = "/run/flowgate-demo/api-token";

/// The PEM files `flowgate certs` made for the demo.
#[derive(Debug, Clone)]
pub struct DemoCerts {
    pub ca: PathBuf,
    pub collector_cert: PathBuf,
    pub collector_key: PathBuf,
    pub probe_cert: PathBuf,
    pub probe_key: PathBuf,
}

/// Runs `exe certs` for a collector reached at `collector_name` and one
/// probe on `node`.
pub fn make_certs(
    exe: &Path,
    dir: &Path,
    collector_name: &str,
    node: &str,
) -> Result<DemoCerts, DemoError> {
    let output = Command::new(exe)
        .arg("certs")
        .arg("--out")
        .arg(dir)
        .args(["--collector-dns", collector_name, "--probe-node", node])
        .output()
        .map_err(DemoError::io(format!("running {} certs", exe.display())))?;
    if !output.status.success() {
        return Err(DemoError::Command {
            command: format!("{} certs --out {}", exe.display(), dir.display()),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    // The layout `flowgate certs` documents (collector/src/certs.rs).
    Ok(DemoCerts {
        ca: dir.join("ca.pem"),
        collector_cert: dir.join("collector.pem"),
        collector_key: dir.join("collector-key.pem"),
        probe_cert: dir.join(format!("probe-{node}.pem")),
        probe_key: dir.join(format!("probe-{node}-key.pem")),
    })
}

/// A fresh random token: 32 bytes from the kernel, hex.
pub fn new_token() -> Result<String, DemoError> {
    let mut bytes = [0u8; 32];
    let mut urandom = std::fs::File::open("/dev/urandom")
        .map_err(DemoError::io("opening /dev/urandom for the API token"))?;
    std::io::Read::read_exact(&mut urandom, &mut bytes)
        .map_err(DemoError::io("reading /dev/urandom for the API token"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The user who ran `sudo`, so the token is theirs to read.
fn invoking_user() -> Option<(u32, u32)> {
    let uid = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid = std::env::var("SUDO_GID").ok()?.parse().ok()?;
    Some((uid, gid))
}

/// Writes `token` to `path` (mode 0600, replacing an older demo's token),
/// owned by the user behind `sudo` when there is one.
pub fn write_token(path: &Path, token: &str) -> Result<(), DemoError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(DemoError::io(format!("creating {}", dir.display())))?;
        // Others may enter (to read a token they own), not list.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711));
    }
    // Never write through whatever was there: a link would redirect us.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(DemoError::io(format!("replacing {}", path.display()))(e)),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(DemoError::io(format!("creating {}", path.display())))?;
    writeln!(file, "{token}").map_err(DemoError::io(format!("writing {}", path.display())))?;
    if let Some((uid, gid)) = invoking_user() {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(DemoError::io(format!(
            "giving {} to uid {uid}",
            path.display()
        )))?;
    }
    Ok(())
}

//! `flowgate probe` refuses to start without what it needs, and says what.

use std::process::Command;

#[test]
fn missing_capabilities_are_named() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc_geteuid() } == 0;
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if !root || !setpriv {
        assert!(
            std::env::var_os("CI").is_none(),
            "needs root and setpriv; required in CI"
        );
        eprintln!("!! SKIPPED: needs root and setpriv (util-linux)");
        return;
    }
    // Root, but without CAP_BPF and CAP_PERFMON in the bounding set.
    let out = Command::new("setpriv")
        .args(["--bounding-set=-bpf,-perfmon", "--"])
        .arg(env!("CARGO_BIN_EXE_flowgate"))
        .args([
            "probe",
            "--collector",
            "http://127.0.0.1:1",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("missing capabilities: CAP_BPF, CAP_PERFMON (run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"),
        "{err}"
    );
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

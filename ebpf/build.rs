//! Compiles `bpf/flowgate.bpf.c` with clang for the BPF target, and a host C
//! program that prints the ABI header's layout (sizes and offsets) so a test
//! can compare it with the Rust mirror.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    for f in [
        "bpf/flowgate.bpf.c",
        "bpf/flowgate.h",
        "bpf/parse.h",
        "bpf/layout.c",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let arch_include = format!(
        "/usr/include/{}-linux-gnu",
        env::var("CARGO_CFG_TARGET_ARCH").unwrap()
    );
    let status = Command::new(&clang)
        .args(["-target", "bpf", "-g", "-O2", "-Wall", "-Werror"])
        .arg(format!("-I{arch_include}"))
        .args(["-c", "bpf/flowgate.bpf.c", "-o"])
        .arg(out.join("flowgate.bpf.o"))
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{clang}` ({e}): the eBPF programs need clang and the libbpf headers; \
                 run `sudo scripts/setup.sh` (or set CLANG to a clang binary)"
            )
        });
    assert!(
        status.success(),
        "clang failed to compile bpf/flowgate.bpf.c (see above)"
    );

    // The host side of the layout check: same header, host compiler.
    let cc = env::var("CC").unwrap_or_else(|_| "cc".into());
    let exe = out.join("layout");
    let status = Command::new(&cc)
        .args(["-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg("bpf/layout.c")
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
    assert!(status.success(), "compiling bpf/layout.c failed");
    let layout = Command::new(&exe).output().expect("run the layout program");
    assert!(layout.status.success());
    std::fs::write(out.join("c_layout.txt"), layout.stdout).unwrap();
}

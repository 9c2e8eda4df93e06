//! Generates the Rust types and the tonic service from `flowgate/v1/*.proto`.
fn main() {
    println!("cargo:rerun-if-changed=flowgate/v1/flow.proto");
    if std::process::Command::new(std::env::var("PROTOC").unwrap_or_else(|_| "protoc".into()))
        .arg("--version")
        .output()
        .is_err()
    {
        panic!(
            "protoc (the Protocol Buffers compiler) was not found: run `sudo scripts/setup.sh` \
             (it installs Debian's protobuf-compiler) or set PROTOC to its path"
        );
    }
    tonic_prost_build::configure()
        .compile_protos(&["flowgate/v1/flow.proto"], &["."])
        .expect("compiling flowgate/v1/flow.proto");
}

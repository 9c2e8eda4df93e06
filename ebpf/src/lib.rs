//! eBPF capture programs (C, built with clang -target bpf) embedded as bytes, and the Rust mirror of their kernel/user ABI.

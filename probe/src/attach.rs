//! Attaching the TC programs to interfaces, following interfaces as pods
//! come and go, and detaching cleanly.
//!
//! On Linux 6.6+ the programs attach as TCX links (nothing but the link to
//! remove); before that, through a clsact qdisc and netlink filters. Links
//! are dropped on detach and when the [`Attacher`] is dropped, so no filter
//! outlives the probe. Interface changes are learned from netlink link
//! notifications; a rescan of the interface list is the source of truth.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, RwLock};

use aya::Ebpf;
use aya::programs::tc::SchedClassifierLinkId;
use aya::programs::{SchedClassifier, TcAttachType};
use flowgate_ebpf::names;
use rustc_hash::FxHashMap;

use crate::config::matches_pattern;

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("attaching to interface {interface}")]
    Attach {
        interface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("netlink socket")]
    Netlink(#[source] std::io::Error),
}

#[derive(Debug)]
struct Attached {
    ifindex: u32,
    links: Vec<(&'static str, SchedClassifierLinkId)>,
}

/// Interface names by index, including interfaces gone since (their last
/// flows are exported after they vanish).
pub type IfNames = Arc<RwLock<FxHashMap<u32, String>>>;

pub struct Attacher {
    bpf: Ebpf,
    patterns: Vec<String>,
    attached: BTreeMap<String, Attached>,
    names: IfNames,
}

/// Interfaces on this host, as (name, index).
pub fn interfaces() -> Vec<(String, u32)> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns a list terminated by a zero entry, freed
    // below with if_freenameindex.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*p).if_name)
                .to_string_lossy()
                .into_owned();
            out.push((name, (*p).if_index));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

impl Attacher {
    /// Takes the loaded object; its TC programs must be loaded already.
    pub fn new(bpf: Ebpf, patterns: Vec<String>) -> Self {
        Attacher {
            bpf,
            patterns,
            attached: BTreeMap::new(),
            names: Default::default(),
        }
    }

    pub fn names(&self) -> IfNames {
        self.names.clone()
    }

    pub fn attached(&self) -> impl Iterator<Item = (&String, u32)> {
        self.attached.iter().map(|(n, a)| (n, a.ifindex))
    }

    /// Attaches to new matching interfaces and forgets vanished ones.
    /// Returns (attached, detached) names.
    pub fn sync(&mut self) -> (Vec<String>, Vec<String>) {
        let now = interfaces();
        {
            let mut names = self.names.write().unwrap();
            for (name, idx) in &now {
                names.insert(*idx, name.clone());
            }
        }
        let wanted: BTreeMap<&String, u32> = now
            .iter()
            .filter(|(n, _)| n != "lo" && self.patterns.iter().any(|p| matches_pattern(p, n)))
            .map(|(n, i)| (n, *i))
            .collect();
        let gone: Vec<String> = self
            .attached
            .iter()
            .filter(|(n, a)| wanted.get(n) != Some(&a.ifindex))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &gone {
            self.detach(name);
        }
        let mut added = Vec::new();
        for (name, ifindex) in wanted {
            if self.attached.contains_key(name) {
                continue;
            }
            match self.attach(name, ifindex) {
                Ok(()) => added.push(name.clone()),
                // An interface can vanish between the scan and the attach.
                Err(e) => tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "not observing interface"
                ),
            }
        }
        (added, gone)
    }

    fn attach(&mut self, name: &str, ifindex: u32) -> Result<(), AttachError> {
        let mut links = Vec::new();
        for (prog, hook) in [
            (names::TC_INGRESS, TcAttachType::Ingress),
            (names::TC_EGRESS, TcAttachType::Egress),
        ] {
            let p: &mut SchedClassifier = self
                .bpf
                .program_mut(prog)
                .expect("program in object")
                .try_into()
                .expect("program type");
            match p.attach(name, hook) {
                Ok(id) => links.push((prog, id)),
                Err(first) => {
                    // Kernels before 6.6 attach through a clsact qdisc.
                    let _ = aya::programs::tc::qdisc_add_clsact(name);
                    match p.attach(name, hook) {
                        Ok(id) => links.push((prog, id)),
                        Err(_) => {
                            self.attached
                                .insert(name.to_string(), Attached { ifindex, links });
                            self.detach(name);
                            return Err(AttachError::Attach {
                                interface: name.to_string(),
                                source: first,
                            });
                        }
                    }
                }
            }
        }
        tracing::info!(interface = name, ifindex, "observing interface");
        self.attached
            .insert(name.to_string(), Attached { ifindex, links });
        Ok(())
    }

    fn detach(&mut self, name: &str) {
        let Some(a) = self.attached.remove(name) else {
            return;
        };
        for (prog, id) in a.links {
            if let Ok(p) =
                <&mut SchedClassifier>::try_from(self.bpf.program_mut(prog).expect("program"))
            {
                // Fails only if the interface is gone, taking the link with it.
                let _ = p.detach(id);
            }
        }
        tracing::info!(interface = name, "stopped observing interface");
    }

    pub fn detach_all(&mut self) {
        let names: Vec<String> = self.attached.keys().cloned().collect();
        for n in names {
            self.detach(&n);
        }
    }
}

impl Drop for Attacher {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// A netlink socket subscribed to link notifications (RTMGRP_LINK).
pub fn link_notifications() -> Result<OwnedFd, AttachError> {
    // SAFETY: plain socket/bind syscalls on a zeroed sockaddr_nl; the fd is
    // owned by the returned OwnedFd.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(AttachError::Netlink(std::io::Error::last_os_error()));
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = libc::RTMGRP_LINK as u32;
        let rc = libc::bind(
            owned.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        );
        if rc < 0 {
            return Err(AttachError::Netlink(std::io::Error::last_os_error()));
        }
        Ok(owned)
    }
}

/// Empties the socket's queue; the messages only say "look again".
pub fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 8192];
    // SAFETY: recv into a local buffer of the given length.
    while unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    } > 0
    {}
}

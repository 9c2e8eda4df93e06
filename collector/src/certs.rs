//! `flowgate certs`: a private CA, the collector's server certificate and one
//! client certificate per probe node, for the demo and for clusters without
//! cert-manager.
//!
//! A probe certificate names its node as a DNS subject alternative name: the
//! collector accepts a batch only when its `node` is one of those names.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// What to create.
#[derive(Debug, Clone)]
pub struct CertsRequest {
    pub out: PathBuf,
    /// DNS names and IP addresses the collector is reached by (gRPC and HTTPS).
    pub collector_names: Vec<String>,
    /// One client certificate per node name.
    pub probe_nodes: Vec<String>,
    /// Validity of every certificate, from now.
    pub valid_days: u32,
}

/// The files written, by role.
#[derive(Debug, Clone)]
pub struct CertsFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub collector_cert: PathBuf,
    pub collector_key: PathBuf,
    /// (node, certificate, key)
    pub probes: Vec<(String, PathBuf, PathBuf)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("--collector-dns needs at least one name")]
    NoCollectorName,
    #[error("{name:?} is not a DNS name or IP address usable in a certificate")]
    BadName {
        name: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot create the {role} certificate")]
    Generate {
        role: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} exists: refusing to overwrite a key (remove it, or pick another --out)")]
    Exists { path: PathBuf },
}

fn generate_err(role: impl Into<String>) -> impl FnOnce(rcgen::Error) -> CertsError {
    let role = role.into();
    move |source| CertsError::Generate { role, source }
}

fn params(names: &[String], days: u32) -> Result<CertificateParams, CertsError> {
    let mut p = CertificateParams::new(names.to_vec()).map_err(|source| CertsError::BadName {
        name: names.join(","),
        source,
    })?;
    let now = rcgen::date_time_ymd(1970, 1, 1)
        + (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default());
    // A little slack for clocks that lag the machine that made the certificate.
    p.not_before = now - std::time::Duration::from_secs(3600);
    p.not_after = now + std::time::Duration::from_secs(u64::from(days) * 86_400);
    Ok(p)
}

/// Creates the CA and every certificate in `request.out` (created if
/// missing). Private keys are written mode 0600; existing keys are never
/// overwritten.
pub fn generate(request: &CertsRequest) -> Result<CertsFiles, CertsError> {
    if request.collector_names.is_empty() {
        return Err(CertsError::NoCollectorName);
    }
    let out = &request.out;
    std::fs::create_dir_all(out).map_err(|source| CertsError::Write {
        path: out.clone(),
        source,
    })?;
    let days = request.valid_days;

    let mut ca = params(&[], days)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "flowgate CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(generate_err("CA"))?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca, ca_key).map_err(generate_err("CA"))?;

    let mut leafs = Vec::new();
    let mut server = params(&request.collector_names, days)?;
    server
        .distinguished_name
        .push(DnType::CommonName, request.collector_names[0].as_str());
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leafs.push(("collector".to_owned(), server));
    for node in &request.probe_nodes {
        let mut client = params(std::slice::from_ref(node), days)?;
        client
            .distinguished_name
            .push(DnType::CommonName, node.as_str());
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        leafs.push((format!("probe-{node}"), client));
    }

    let files = CertsFiles {
        ca_cert: out.join("ca.pem"),
        ca_key: out.join("ca-key.pem"),
        collector_cert: out.join("collector.pem"),
        collector_key: out.join("collector-key.pem"),
        probes: request
            .probe_nodes
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    out.join(format!("probe-{n}.pem")),
                    out.join(format!("probe-{n}-key.pem")),
                )
            })
            .collect(),
    };
    let mut writes = vec![
        (files.ca_cert.clone(), ca.pem(), false),
        (files.ca_key.clone(), ca_key_pem, true),
    ];
    for (role, p) in leafs {
        let key = KeyPair::generate().map_err(generate_err(role.as_str()))?;
        let cert = p
            .signed_by(&key, &ca)
            .map_err(generate_err(role.as_str()))?;
        writes.push((out.join(format!("{role}.pem")), cert.pem(), false));
        writes.push((
            out.join(format!("{role}-key.pem")),
            key.serialize_pem(),
            true,
        ));
    }
    for (path, _, secret) in &writes {
        if *secret && path.exists() {
            return Err(CertsError::Exists { path: path.clone() });
        }
    }
    for (path, text, secret) in writes {
        write(&path, &text, secret)?;
    }
    Ok(files)
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), CertsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| CertsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(err)?;
    file.write_all(text.as_bytes()).map_err(err)
}

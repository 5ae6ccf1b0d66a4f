//! Certificates made at test time with the openssl CLI: a private CA and leaves it signs
//! (ECDSA P-256), in a temp dir the test owns.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and the files of what it issued.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub name: String,
}

/// A certificate file and its key file.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(args: &[&str], cwd: &Path) {
    let out = Command::new("openssl").args(args).current_dir(cwd).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Pki {
    /// A new CA named `name` (subject `CN=<name>`).
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki { dir, name: name.to_string() };
        pki.key("ca.key");
        openssl(
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "3650",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            pki.dir.path(),
        );
        pki
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn key(&self, file: &str) {
        openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file], self.dir.path());
    }

    /// A server certificate for `names` (DNS SANs; IPs become IP SANs), valid `days` days.
    pub fn server(&self, file: &str, names: &[&str], days: u32) -> Issued {
        let san = names
            .iter()
            .map(|n| if n.parse::<std::net::IpAddr>().is_ok() { format!("IP:{n}") } else { format!("DNS:{n}") })
            .collect::<Vec<_>>()
            .join(",");
        self.issue(file, &format!("/CN={}", names[0]), &san, "serverAuth", days, &[])
    }

    /// A client certificate with subject `subject` (e.g. `/CN=alice/O=Example`).
    pub fn client(&self, file: &str, subject: &str) -> Issued {
        self.issue(file, subject, "DNS:client.invalid", "clientAuth", 365, &[])
    }

    /// A client certificate whose `subject` is read as UTF-8, with `+` joining the attributes
    /// of a multi-valued RDN (`/O=Example/CN=bob+UID=42`).
    pub fn client_multivalued(&self, file: &str, subject: &str) -> Issued {
        self.issue(file, subject, "DNS:client.invalid", "clientAuth", 365, &["-utf8", "-multivalue-rdn"])
    }

    /// The subject of an issued certificate as OpenSSL writes it in RFC 2253/4514 form.
    pub fn rfc4514_subject(&self, issued: &Issued) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
            .arg(&issued.cert)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim_end().strip_prefix("subject=").unwrap_or(&text).to_string()
    }

    fn issue(&self, file: &str, subject: &str, san: &str, eku: &str, days: u32, req_flags: &[&str]) -> Issued {
        let dir = self.dir.path();
        let (key, csr, ext, pem) =
            (format!("{file}.key"), format!("{file}.csr"), format!("{file}.ext"), format!("{file}.pem"));
        self.key(&key);
        let mut req = vec!["req", "-new", "-key", &key, "-subj", subject, "-out", &csr];
        req.extend_from_slice(req_flags);
        openssl(&req, dir);
        std::fs::write(
            dir.join(&ext),
            format!(
                "subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={eku}\n"
            ),
        )
        .unwrap();
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                &days.to_string(),
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
            dir,
        );
        Issued { cert: dir.join(pem), key: dir.join(key) }
    }
}

/// The subject of the certificate a TLS server presents for `servername` (`None`: no SNI),
/// as `openssl s_client` prints it (e.g. `CN = a.test`), or `None` when the handshake fails.
pub fn served_subject(addr: std::net::SocketAddr, servername: Option<&str>) -> Option<String> {
    let connect = addr.to_string();
    let mut args = vec!["s_client", "-connect", connect.as_str()];
    match servername {
        Some(name) => args.extend(["-servername", name]),
        None => args.push("-noservername"),
    }
    let out = Command::new("openssl").args(&args).stdin(std::process::Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains("BEGIN CERTIFICATE") {
        return None;
    }
    text.lines().find_map(|l| l.strip_prefix("subject=")).map(|s| s.trim().to_string())
}

/// Write `contents` to `path` through a temporary file and a rename (as cert managers do).
pub fn replace_file(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp-new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

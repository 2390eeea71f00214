//! Real nginx serving a published tree: the proof that a provider needs no
//! server logic, used by the tests and by the QEMU scenarios.
//!
//! nginx gets its listening sockets from the caller (the `NGINX` environment
//! variable nginx itself uses to hand sockets to a new binary on upgrade):
//! they are bound to free loopback ports and listening before nginx starts,
//! so there is neither a port race nor a wait for nginx to come up.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::serve::TlsFiles;

/// Debian's nginx binary.
pub const NGINX: &str = "/usr/sbin/nginx";

pub struct Nginx {
    child: Child,
    dir: PathBuf,
    /// Where it serves plain HTTP.
    pub http: SocketAddr,
    /// Where it serves HTTPS.
    pub https: SocketAddr,
}

impl Nginx {
    /// Serves `tree` on two free loopback ports, HTTP and HTTPS with
    /// `tls`, keeping nginx's config, logs and temp files in `dir`.
    pub fn start(tree: &Path, tls: &TlsFiles, dir: &Path) -> io::Result<Nginx> {
        Nginx::start_on(tree, tls, dir, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// [`Nginx::start`] on free ports of `ip`, in the network namespace of
    /// the calling thread (nginx inherits both the sockets and the
    /// namespace).
    pub fn start_on(tree: &Path, tls: &TlsFiles, dir: &Path, ip: IpAddr) -> io::Result<Nginx> {
        let http = TcpListener::bind((ip, 0))?;
        let https = TcpListener::bind((ip, 0))?;
        let (http_addr, https_addr) = (http.local_addr()?, https.local_addr()?);
        let d = dir.display();
        // Root-owned workers (`user root`): the tree sits in a 0700 temp dir.
        let config = format!(
            "user root;
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    types {{ application/json json; }}
    default_type application/octet-stream;
    server {{
        listen {http_addr};
        listen {https_addr} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {root};
        location /blobs/ {{
            add_header Cache-Control \"public, max-age=31536000, immutable\";
        }}
    }}
}}
",
            cert = tls.cert.display(),
            key = tls.key.display(),
            root = tree.display(),
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config)?;
        // The sockets must survive exec; everything else keeps CLOEXEC.
        for socket in [&http, &https] {
            rustix::io::fcntl_setfd(socket, rustix::io::FdFlags::empty())?;
        }
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .env(
                "NGINX",
                format!("{};{};", http.as_raw_fd(), https.as_raw_fd()),
            )
            .stdin(Stdio::null())
            .spawn()?;
        // nginx holds its own copies now.
        drop((http, https));
        Ok(Nginx {
            child,
            dir: dir.to_owned(),
            http: http_addr,
            https: https_addr,
        })
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers, then exits; wait for it.
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let _ = self.child.wait();
    }
}

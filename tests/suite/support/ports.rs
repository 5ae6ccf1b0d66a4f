//! Ports that no other test can take between the moment a test picks one and the moment its
//! server listens on it.
//!
//! Binding `127.0.0.1:0`, reading the port and closing the socket (what the harness's `free_port` did) leaves
//! a window in which the kernel may hand the same port to any other `bind(:0)` or outgoing
//! connection of the tests running beside it; the server started on it then fails with "address
//! in use", or a test talks to the wrong process. A [`Reserved`] port closes that window: it is
//! held by a socket bound with `SO_REUSEADDR` that never listens. On Linux, while that socket
//! lives:
//! - no `bind(:0)` is given the port (automatic port choice treats a bound port as taken), and no
//!   outgoing connection uses it as its local port;
//! - a connection to it is refused until a server listens on it;
//! - a server that binds with `SO_REUSEADDR` can bind and listen on it: Pingora (`bind_tcp`),
//!   tokio and std listeners, Go's `net` (nats-server) and redis-server all set it. Its
//!   restarts on the same port are safe as long as the reservation is kept.
//!
//! `tests/suite/harness.rs` checks these properties on the machine the tests run on.

use socket2::{Domain, SockAddr, Socket, Type};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// A 127.0.0.1 port held for a server the test starts: keep it alive for as long as the server
/// may run or be started again on the port.
pub struct Reserved {
    // Held, never used: dropping it gives the port back.
    _socket: Socket,
    addr: SocketAddr,
}

impl Reserved {
    /// A fresh port on 127.0.0.1, chosen by the kernel.
    pub fn new() -> Reserved {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
        socket.set_reuse_address(true).expect("SO_REUSEADDR");
        socket.bind(&SockAddr::from(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))).expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().expect("local address").as_socket().expect("an inet address");
        Reserved { _socket: socket, addr }
    }

    /// The address (`127.0.0.1:<port>`) to give the server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Default for Reserved {
    fn default() -> Self {
        Reserved::new()
    }
}

/// A port where nothing listens and nothing will while it lives: connections are refused. For
/// a backend, collector or peer that is down.
pub struct DeadPort(Reserved);

impl DeadPort {
    pub fn new() -> DeadPort {
        DeadPort(Reserved::new())
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }

    pub fn port(&self) -> u16 {
        self.0.port()
    }
}

impl Default for DeadPort {
    fn default() -> Self {
        DeadPort::new()
    }
}

/// Whether process `pid` has a TCP socket listening on `addr` (an IPv4 address): a server that
/// answers on a port may be another process than the one a test started there.
pub fn listens(pid: u32, addr: SocketAddr) -> bool {
    let IpAddr::V4(ip) = addr.ip() else { panic!("an IPv4 address: {addr}") };
    // /proc/net/tcp: `sl local_address rem_address st … uid timeout inode`, the address as the
    // hex of the in-memory (little-endian on the machines we run on) u32, then the port.
    let local = format!("{:08X}:{:04X}", u32::from_le_bytes(ip.octets()), addr.port());
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let inodes: HashSet<String> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && f[1] == local && f[3] == "0A")
        .map(|f| format!("socket:[{}]", f[9]))
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| inodes.contains(&*l.to_string_lossy())))
}

//! Every side effect the init has on the kernel, one function per syscall.
//!
//! This is the only module allowed `unsafe`. Most calls go through rustix,
//! which is safe; raw `libc` is used only where rustix has no wrapper (signal
//! masks). Each function is named after its syscall, takes borrowed handles
//! and returns `io::Result`, so callers can name the operation and its
//! arguments in their own error types.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

pub use rustix::mount::MountFlags;
pub use rustix::process::{Pid, WaitStatus};
pub use rustix::system::RebootCommand;

/// [mount(2)](https://man7.org/linux/man-pages/man2/mount.2.html)
pub fn mount(
    source: &CStr,
    target: &CStr,
    fstype: &CStr,
    flags: MountFlags,
    data: Option<&CStr>,
) -> io::Result<()> {
    Ok(rustix::mount::mount(source, target, fstype, flags, data)?)
}

/// [mkdir(2)](https://man7.org/linux/man-pages/man2/mkdir.2.html)
pub fn mkdir(path: &CStr, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::mkdir(
        path,
        rustix::fs::Mode::from_raw_mode(mode),
    )?)
}

/// [reboot(2)](https://man7.org/linux/man-pages/man2/reboot.2.html). Returns
/// only on failure (or for the `Cad*` commands).
pub fn reboot(cmd: RebootCommand) -> io::Result<()> {
    Ok(rustix::system::reboot(cmd)?)
}

/// [sync(2)](https://man7.org/linux/man-pages/man2/sync.2.html)
pub fn sync() {
    rustix::fs::sync();
}

/// [clock_gettime(2)](https://man7.org/linux/man-pages/man2/clock_gettime.2.html)
/// of `CLOCK_REALTIME`, in whole seconds since the epoch (negative before it).
pub fn clock_gettime_realtime() -> i64 {
    rustix::time::clock_gettime(rustix::time::ClockId::Realtime).tv_sec
}

/// [clock_gettime(2)](https://man7.org/linux/man-pages/man2/clock_gettime.2.html)
/// of `CLOCK_BOOTTIME`: time since the kernel started, the same clock the
/// kernel's own log timestamps use.
pub fn clock_gettime_boottime() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    // The kernel keeps tv_nsec in 0..1e9 and tv_sec non-negative for BOOTTIME.
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// [clock_settime(2)](https://man7.org/linux/man-pages/man2/clock_settime.2.html)
/// of `CLOCK_REALTIME`.
pub fn clock_settime_realtime(seconds: i64) -> io::Result<()> {
    let t = rustix::time::Timespec {
        tv_sec: seconds,
        tv_nsec: 0,
    };
    Ok(rustix::time::clock_settime(
        rustix::time::ClockId::Realtime,
        t,
    )?)
}

/// [finit_module(2)](https://man7.org/linux/man-pages/man2/finit_module.2.html)
/// with no flags: every module in an image is an uncompressed `.ko`.
pub fn finit_module(fd: impl AsFd, params: &CStr) -> io::Result<()> {
    Ok(rustix::system::finit_module(fd, params, 0)?)
}

/// Gives the calling thread the lowest scheduling priority (nice 19), so it
/// runs on CPU time the other threads leave idle.
/// [setpriority(2)](https://man7.org/linux/man-pages/man2/setpriority.2.html)
/// with `PRIO_PROCESS` and 0 changes only the calling thread on Linux.
pub fn lowest_priority() -> io::Result<()> {
    Ok(rustix::process::setpriority_process(None, 19)?)
}

/// [waitpid(2)](https://man7.org/linux/man-pages/man2/waitpid.2.html) for any
/// child, without blocking. `Ok(None)` when no child has changed state;
/// `ECHILD` when there are no children at all.
pub fn waitpid_any_nohang() -> io::Result<Option<(Pid, WaitStatus)>> {
    Ok(rustix::process::waitpid(
        None,
        rustix::process::WaitOptions::NOHANG,
    )?)
}

/// [getpid(2)](https://man7.org/linux/man-pages/man2/getpid.2.html)
pub fn getpid() -> i32 {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// [dup2(2)](https://man7.org/linux/man-pages/man2/dup2.2.html) of `fd` onto
/// standard input, output and error.
pub fn dup2_stdio(fd: impl AsFd) -> io::Result<()> {
    let fd = fd.as_fd();
    rustix::stdio::dup2_stdin(fd)?;
    rustix::stdio::dup2_stdout(fd)?;
    rustix::stdio::dup2_stderr(fd)?;
    Ok(())
}

/// Whether file descriptor 0 is open (the kernel opens `/dev/console` on 0,
/// 1 and 2 only when the initramfs has that node).
pub fn stdin_is_open() -> bool {
    rustix::io::fcntl_getfd(rustix::stdio::stdin()).is_ok()
}

/// Arranges for the child of `cmd` to call
/// [setsid(2)](https://man7.org/linux/man-pages/man2/setsid.2.html) and then
/// `ioctl(0, TIOCSCTTY)` ([ioctl_tty(2)](https://man7.org/linux/man-pages/man2/ioctl_tty.2.html))
/// before it executes, so a shell on the console gets job control and Ctrl-C.
pub fn command_setsid_ctty(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec. It only makes
    // two raw system calls through rustix, which are async-signal-safe and do
    // not allocate or take locks.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
            Ok(())
        });
    }
}

/// [getrandom(2)](https://man7.org/linux/man-pages/man2/getrandom.2.html),
/// filling the whole buffer (blocking until the pool is initialised).
pub fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        filled +=
            rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(())
}

/// [getrandom(2)](https://man7.org/linux/man-pages/man2/getrandom.2.html)
/// with `GRND_INSECURE`: never blocks, even before the entropy pool is
/// initialised (which takes about a second under QEMU's TCG). For values that
/// must differ between machines but need not be secret, such as DHCP
/// transaction ids and retransmission jitter.
pub fn getrandom_insecure(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        filled +=
            rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::INSECURE)?;
    }
    Ok(())
}

/// [memfd_create(2)](https://man7.org/linux/man-pages/man2/memfd_create.2.html)
/// with `MFD_CLOEXEC | MFD_ALLOW_SEALING`.
pub fn memfd_create(name: &CStr) -> io::Result<OwnedFd> {
    use rustix::fs::MemfdFlags;
    Ok(rustix::fs::memfd_create(
        name,
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?)
}

/// `fcntl(fd, F_ADD_SEALS, SEAL_SEAL | SEAL_SHRINK | SEAL_GROW | SEAL_WRITE)`
/// ([memfd_create(2)](https://man7.org/linux/man-pages/man2/memfd_create.2.html)):
/// after this no one can change the file's contents or size.
pub fn fcntl_seal_all(fd: impl AsFd) -> io::Result<()> {
    use rustix::fs::SealFlags;
    Ok(rustix::fs::fcntl_add_seals(
        fd,
        SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
    )?)
}

/// The signals PID 1 takes synchronously on its supervisor thread.
pub const SUPERVISED_SIGNALS: [i32; 7] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGPWR,
];

fn supervised_set() -> io::Result<libc::sigset_t> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the whole sigset_t it is given; the
    // pointer comes from a live MaybeUninit of the right type.
    if unsafe { libc::sigemptyset(set.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sigemptyset above returned 0, so the set is initialised.
    let mut set = unsafe { set.assume_init() };
    for signal in SUPERVISED_SIGNALS {
        // SAFETY: `set` is an initialised sigset_t and `signal` a valid
        // signal number from the libc constants above.
        if unsafe { libc::sigaddset(&mut set, signal) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(set)
}

/// [pthread_sigmask(3)](https://man7.org/linux/man-pages/man3/pthread_sigmask.3.html)
/// `SIG_BLOCK` of [`SUPERVISED_SIGNALS`] on the calling thread. Called before
/// any other thread starts, so every thread inherits the mask and the signals
/// stay pending until [`sigwaitinfo`] takes them. Children started with
/// `std::process::Command` get an empty mask back (std resets it).
pub fn sigprocmask_block_supervised() -> io::Result<()> {
    let set = supervised_set()?;
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// [sigwaitinfo(2)](https://man7.org/linux/man-pages/man2/sigwaitinfo.2.html)
/// for one of [`SUPERVISED_SIGNALS`]; returns its number. Retries on `EINTR`.
pub fn sigwaitinfo() -> io::Result<i32> {
    let set = supervised_set()?;
    loop {
        // SAFETY: `set` is initialised; a null siginfo pointer is allowed.
        let signal = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if signal >= 0 {
            return Ok(signal);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// `fcntl(fd, F_GET_SEALS)` ([memfd_create(2)](https://man7.org/linux/man-pages/man2/memfd_create.2.html)):
/// whether the file is sealed against writes, shrinking and growing, as
/// [`fcntl_seal_all`] leaves it.
pub fn fcntl_get_seals_all(fd: impl AsFd) -> io::Result<bool> {
    use rustix::fs::SealFlags;
    let seals = rustix::fs::fcntl_get_seals(fd)?;
    Ok(seals.contains(SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE))
}

/// [fstat(2)](https://man7.org/linux/man-pages/man2/fstat.2.html): the
/// file's size in bytes.
pub fn fstat_size(fd: impl AsFd) -> io::Result<u64> {
    let st = rustix::fs::fstat(fd)?;
    u64::try_from(st.st_size).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// The size of a page of the running kernel
/// ([getauxval(3)](https://man7.org/linux/man-pages/man3/getauxval.3.html) `AT_PAGESZ`).
pub fn page_size() -> usize {
    rustix::param::page_size()
}

/// A read-only, shared mapping of a whole sealed file; unmapped on drop.
pub struct SealedMap {
    ptr: *mut std::ffi::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and its contents cannot change (the file is
// sealed against writes and shrinking), so sharing or sending the pointer
// between threads is as safe as sharing a `&[u8]`.
unsafe impl Send for SealedMap {}
// SAFETY: as above; nothing mutates the mapped bytes.
unsafe impl Sync for SealedMap {}

impl std::ops::Deref for SealedMap {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes (mmap
        // succeeded and munmap only runs in Drop); the file behind it is
        // sealed with F_SEAL_WRITE and F_SEAL_SHRINK, so no one can change
        // the bytes or truncate the file (which would fault) while the slice
        // is borrowed from `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for SealedMap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and no slice
        // borrowed from `self` outlives it.
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}

/// [mmap(2)](https://man7.org/linux/man-pages/man2/mmap.2.html) of a whole
/// file with `PROT_READ, MAP_SHARED`, after checking (`F_GET_SEALS`) that it
/// is sealed against writes, shrinking and growing. Refuses an unsealed file
/// with `EPERM` and an empty one with `EINVAL`, since a mapping of either
/// could not be handed out as an immutable `&[u8]`.
pub fn mmap_sealed(fd: impl AsFd) -> io::Result<SealedMap> {
    use rustix::mm::{MapFlags, ProtFlags};
    let fd = fd.as_fd();
    if !fcntl_get_seals_all(fd)? {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    let len =
        usize::try_from(fstat_size(fd)?).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    if len == 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: a null hint lets the kernel choose the address, so no existing
    // memory is replaced; the mapping is read-only and the file is sealed
    // (checked above), so the `&[u8]` SealedMap hands out stays valid and
    // unchanged until it is unmapped in Drop.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ,
            MapFlags::SHARED,
            fd,
            0,
        )?
    };
    Ok(SealedMap { ptr, len })
}

/// `KEXEC_FILE_NO_INITRAMFS` from `<linux/kexec.h>`.
pub const KEXEC_FILE_NO_INITRAMFS: u64 = 0x4;
/// `KEXEC_ARCH_DEFAULT` from `<linux/kexec.h>`: the running kernel's arch.
pub const KEXEC_ARCH_DEFAULT: u64 = 0;

/// [kexec_file_load(2)](https://man7.org/linux/man-pages/man2/kexec_file_load.2.html):
/// the kernel reads, checks (signature, lockdown) and places the next kernel
/// itself. Without an initrd, `KEXEC_FILE_NO_INITRAMFS` is added to `flags`.
#[cfg(target_arch = "x86_64")]
pub fn kexec_file_load(
    kernel: std::os::fd::BorrowedFd<'_>,
    initrd: Option<std::os::fd::BorrowedFd<'_>>,
    cmdline: &CStr,
    flags: u64,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (initrd_fd, flags) = match initrd {
        Some(fd) => (fd.as_raw_fd(), flags),
        None => (-1, flags | KEXEC_FILE_NO_INITRAMFS),
    };
    // The length the kernel expects includes the terminating NUL.
    let cmdline_len = cmdline.to_bytes_with_nul().len();
    // SAFETY: both fds are borrowed, so open for the whole call (or -1 with
    // KEXEC_FILE_NO_INITRAMFS); `cmdline` is a live NUL-terminated buffer of
    // exactly `cmdline_len` bytes, which the kernel only reads.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            kernel.as_raw_fd(),
            initrd_fd,
            cmdline_len,
            cmdline.as_ptr(),
            flags,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One segment for [`kexec_load`]: bytes to copy to physical address `mem`,
/// zero-filled up to `memsz`.
#[derive(Debug, Clone, Copy)]
pub struct KexecSegment<'a> {
    pub buf: &'a [u8],
    pub mem: u64,
    pub memsz: u64,
}

/// `struct kexec_segment` from `<linux/kexec.h>`.
#[repr(C)]
struct RawKexecSegment {
    buf: *const std::ffi::c_void,
    bufsz: usize,
    mem: usize,
    memsz: usize,
}

/// [kexec_load(2)](https://man7.org/linux/man-pages/man2/kexec_load.2.html):
/// loads segments the caller built for the next boot, entered at `entry`
/// (physical). The kernel copies every buffer during the call.
pub fn kexec_load(entry: u64, segments: &[KexecSegment<'_>], flags: u64) -> io::Result<()> {
    let too_big = || io::Error::from_raw_os_error(libc::EINVAL);
    let raw = segments
        .iter()
        .map(|s| {
            Ok(RawKexecSegment {
                buf: s.buf.as_ptr().cast(),
                bufsz: s.buf.len(),
                mem: usize::try_from(s.mem).map_err(|_| too_big())?,
                memsz: usize::try_from(s.memsz).map_err(|_| too_big())?,
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    let entry = usize::try_from(entry).map_err(|_| too_big())?;
    // SAFETY: `raw` holds `raw.len()` initialised segments whose `buf`
    // pointers borrow from `segments`, live for the whole call with exactly
    // `bufsz` readable bytes; the kernel only reads them and copies the bytes
    // before returning.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            entry,
            raw.len(),
            raw.as_ptr(),
            flags as libc::c_ulong,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// [sethostname(2)](https://man7.org/linux/man-pages/man2/sethostname.2.html)
pub fn sethostname(name: &str) -> io::Result<()> {
    Ok(rustix::system::sethostname(name.as_bytes())?)
}

/// [socket(2)](https://man7.org/linux/man-pages/man2/socket.2.html)
/// `(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)` and
/// [bind(2)](https://man7.org/linux/man-pages/man2/bind.2.html) to the
/// multicast `groups` ([rtnetlink(7)](https://man7.org/linux/man-pages/man7/rtnetlink.7.html)).
pub fn socket_netlink_route(groups: u32) -> io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, netlink};
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        // NETLINK_ROUTE is protocol 0, which rustix spells `None`.
        None,
    )?;
    rustix::net::bind(&fd, &netlink::SocketAddrNetlink::new(0, groups))?;
    Ok(fd)
}

/// [send(2)](https://man7.org/linux/man-pages/man2/send.2.html) of the whole
/// buffer (a netlink socket sends to the kernel).
pub fn send(fd: impl AsFd, buf: &[u8]) -> io::Result<usize> {
    Ok(rustix::net::send(fd, buf, rustix::net::SendFlags::empty())?)
}

/// [recv(2)](https://man7.org/linux/man-pages/man2/recv.2.html), with
/// `MSG_DONTWAIT` when `nonblocking`. Retries on `EINTR`.
pub fn recv(fd: impl AsFd, buf: &mut [u8], nonblocking: bool) -> io::Result<usize> {
    use rustix::net::RecvFlags;
    let flags = if nonblocking {
        RecvFlags::DONTWAIT
    } else {
        RecvFlags::empty()
    };
    let fd = fd.as_fd();
    loop {
        match rustix::net::recv(fd, &mut *buf, flags) {
            Ok((n, _)) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// [poll(2)](https://man7.org/linux/man-pages/man2/poll.2.html) for input on
/// one descriptor: true when it is readable within `timeout`. Retries on
/// `EINTR` with the time left.
pub fn poll_readable(fd: impl AsFd, timeout: Duration) -> io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ts = Timespec {
            // A boot budget is at most a day of seconds: no overflow.
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A link-layer socket address, `struct sockaddr_ll`
/// ([packet(7)](https://man7.org/linux/man-pages/man7/packet.7.html)), for
/// IPv4 frames on one interface.
struct LinkAddr {
    ifindex: i32,
    /// Destination hardware address; all zero when binding.
    mac: [u8; 6],
}

// SAFETY: `with_sockaddr` passes `f` a pointer to a fully initialised
// `sockaddr_ll` on its own stack, with that struct's exact size, valid for
// the duration of the call, which is what rustix requires of the trait.
unsafe impl rustix::net::addr::SocketAddrArg for LinkAddr {
    unsafe fn with_sockaddr<R>(
        &self,
        f: impl FnOnce(
            *const rustix::net::addr::SocketAddrOpaque,
            rustix::net::addr::SocketAddrLen,
        ) -> R,
    ) -> R {
        let mut addr = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: (libc::ETH_P_IP as u16).to_be(),
            sll_ifindex: self.ifindex,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 6,
            sll_addr: [0; 8],
        };
        addr.sll_addr[..6].copy_from_slice(&self.mac);
        f(
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as rustix::net::addr::SocketAddrLen,
        )
    }
}

/// [socket(2)](https://man7.org/linux/man-pages/man2/socket.2.html)
/// `(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, ETH_P_IP)` bound to one interface
/// ([packet(7)](https://man7.org/linux/man-pages/man7/packet.7.html)): sends
/// and receives whole IPv4 packets with the kernel handling the link header,
/// whether or not the interface has an address.
pub fn socket_packet_ipv4(ifindex: u32) -> io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, eth};
    let ifindex = i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
    let fd = rustix::net::socket_with(
        AddressFamily::PACKET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(eth::IP),
    )?;
    rustix::net::bind(
        &fd,
        &LinkAddr {
            ifindex,
            mac: [0; 6],
        },
    )?;
    Ok(fd)
}

/// [sendto(2)](https://man7.org/linux/man-pages/man2/sendto.2.html) of an
/// IPv4 packet to the Ethernet broadcast address on `ifindex`.
pub fn sendto_link_broadcast(fd: impl AsFd, ifindex: u32, packet: &[u8]) -> io::Result<usize> {
    let ifindex = i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
    Ok(rustix::net::sendto(
        fd,
        packet,
        rustix::net::SendFlags::empty(),
        &LinkAddr {
            ifindex,
            mac: [0xff; 6],
        },
    )?)
}

/// [socket(2)](https://man7.org/linux/man-pages/man2/socket.2.html)
/// `(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, IPPROTO_UDP)` for a multicast group
/// on one interface ([ip(7)](https://man7.org/linux/man-pages/man7/ip.7.html),
/// [socket(7)](https://man7.org/linux/man-pages/man7/socket.7.html)):
/// `SO_REUSEADDR`, `SO_BINDTODEVICE` to `interface` (so nothing that arrives
/// on another interface reaches it), bound to `0.0.0.0:port`, `group`
/// joined on `address`; multicast goes out from `address` with TTL 255 and
/// is not looped back.
pub fn socket_udp_multicast(
    interface: &str,
    address: std::net::Ipv4Addr,
    group: std::net::Ipv4Addr,
    port: u16,
) -> io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, ipproto, sockopt};
    use std::os::fd::AsRawFd;
    let fd = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(ipproto::UDP),
    )?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    let name = interface.as_bytes();
    // SAFETY: the option value is `name`, a live buffer of exactly
    // `name.len()` bytes that the kernel only reads (it takes the name
    // without a NUL when the length says so); the fd is open for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    rustix::net::bind(
        &fd,
        &std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, port),
    )?;
    sockopt::set_ip_add_membership(&fd, &group, &address)?;
    sockopt::set_ip_multicast_if(&fd, &address)?;
    sockopt::set_ip_multicast_ttl(&fd, 255)?;
    sockopt::set_ip_multicast_loop(&fd, false)?;
    Ok(fd)
}

/// [sendto(2)](https://man7.org/linux/man-pages/man2/sendto.2.html) of a
/// datagram to an IPv4 address and port.
pub fn sendto_ipv4(fd: impl AsFd, buf: &[u8], to: std::net::SocketAddrV4) -> io::Result<usize> {
    Ok(rustix::net::sendto(
        fd,
        buf,
        rustix::net::SendFlags::empty(),
        &to,
    )?)
}

/// [mount(2)](https://man7.org/linux/man-pages/man2/mount.2.html) with
/// `MS_MOVE`: moves the mount at `source` to `target`.
pub fn mount_move(source: &CStr, target: &CStr) -> io::Result<()> {
    Ok(rustix::mount::mount_move(source, target)?)
}

/// [chdir(2)](https://man7.org/linux/man-pages/man2/chdir.2.html)
pub fn chdir(path: &CStr) -> io::Result<()> {
    Ok(rustix::process::chdir(path)?)
}

/// [chroot(2)](https://man7.org/linux/man-pages/man2/chroot.2.html)
pub fn chroot(path: &CStr) -> io::Result<()> {
    Ok(rustix::process::chroot(path)?)
}

/// [socket(2)](https://man7.org/linux/man-pages/man2/socket.2.html)
/// `(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT)` bound to
/// the kernel's uevent multicast group 1: every device the kernel adds or
/// removes is announced here, as udev hears it.
pub fn socket_netlink_uevent() -> io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, netlink};
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::KOBJECT_UEVENT),
    )?;
    rustix::net::bind(&fd, &netlink::SocketAddrNetlink::new(0, 1))?;
    Ok(fd)
}

/// `LOOP_CTL_GET_FREE` on `/dev/loop-control`
/// ([loop(4)](https://man7.org/linux/man-pages/man4/loop.4.html)): the number
/// of a free loop device, allocating one if needed.
pub fn loop_ctl_get_free(control: impl AsFd) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns the number;
    // the fd is borrowed for the call.
    let rc = unsafe { libc::ioctl(control.as_fd().as_raw_fd(), LOOP_CTL_GET_FREE as _) };
    u32::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// `LO_FLAGS_READ_ONLY` ([loop(4)](https://man7.org/linux/man-pages/man4/loop.4.html)).
pub const LO_FLAGS_READ_ONLY: u32 = 1;
/// `LO_FLAGS_AUTOCLEAR`: the device detaches itself when last closed.
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` from `<linux/loop.h>` (232 bytes).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` from `<linux/loop.h>`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// `LOOP_CONFIGURE` ([loop(4)](https://man7.org/linux/man-pages/man4/loop.4.html),
/// Linux 5.8+) on an open loop device: attaches `backing` with `flags` and
/// the name `name` (shown in `/sys/block/loopN/loop/backing_file` as the
/// backing file's path; the name is for `losetup`) in one call.
pub fn loop_configure(
    device: impl AsFd,
    backing: impl AsFd,
    flags: u32,
    name: &str,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
    let fd = u32::try_from(backing.as_fd().as_raw_fd())
        .map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    let mut file_name = [0u8; 64];
    let n = name.len().min(63);
    file_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let config = LoopConfig {
        fd,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name: file_name,
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: `config` is a fully initialised `struct loop_config` on the
    // stack, live for the call; the kernel only reads it. Both fds are
    // borrowed for the call.
    let rc = unsafe {
        libc::ioctl(
            device.as_fd().as_raw_fd(),
            LOOP_CONFIGURE as _,
            &raw const config,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// [fstatat(2)](https://man7.org/linux/man-pages/man2/fstatat.2.html) with
/// `AT_SYMLINK_NOFOLLOW`: the device a path lives on and whether it is a
/// directory (not a symlink to one).
pub fn lstat_dev_dir(path: &CStr) -> io::Result<(u64, bool)> {
    let st = rustix::fs::lstat(path)?;
    let dir = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory;
    Ok((st.st_dev, dir))
}

/// [access(2)](https://man7.org/linux/man-pages/man2/access.2.html) with
/// `X_OK`, resolved by the kernel (so symlinks are followed as `execve`
/// would follow them).
pub fn access_executable(path: &CStr) -> io::Result<()> {
    Ok(rustix::fs::access(path, rustix::fs::Access::EXEC_OK)?)
}

/// `FS_IOC_GETFLAGS` then `FS_IOC_SETFLAGS`
/// ([ioctl_iflags(2)](https://man7.org/linux/man-pages/man2/ioctl_iflags.2.html))
/// with `FS_IMMUTABLE_FL` set or cleared, the other flags kept (efivarfs
/// knows no other).
pub fn ioctl_set_immutable(fd: impl AsFd, immutable: bool) -> io::Result<()> {
    use rustix::fs::IFlags;
    let fd = fd.as_fd();
    let mut flags = rustix::fs::ioctl_getflags(fd)?;
    flags.set(IFlags::IMMUTABLE, immutable);
    Ok(rustix::fs::ioctl_setflags(fd, flags)?)
}

/// The watchdog ioctls of `<linux/watchdog.h>`
/// ([watchdog-api](https://docs.kernel.org/watchdog/watchdog-api.html)),
/// encoded as `_IOR('W', n, int)` / `_IOWR('W', n, int)` — the same numbers
/// on x86_64 and arm64.
mod wdioc {
    pub const SETOPTIONS: libc::c_ulong = 0x8004_5704;
    pub const KEEPALIVE: libc::c_ulong = 0x8004_5705;
    pub const SETTIMEOUT: libc::c_ulong = 0xC004_5706;
    pub const GETTIMEOUT: libc::c_ulong = 0x8004_5707;
}
/// `WDIOS_DISABLECARD` and `WDIOS_ENABLECARD`.
pub const WDIOS_DISABLECARD: i32 = 1;
pub const WDIOS_ENABLECARD: i32 = 2;

/// An ioctl on a watchdog whose argument is one `int` read and (for
/// `SETTIMEOUT`/`GETTIMEOUT`) written back.
fn watchdog_ioctl(fd: BorrowedFd<'_>, request: libc::c_ulong, value: i32) -> io::Result<i32> {
    use std::os::fd::AsRawFd;
    let mut arg: libc::c_int = value;
    // SAFETY: every watchdog request used here takes a pointer to one int,
    // which `arg` is, live on the stack for the call; the fd is borrowed.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, &raw mut arg) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(arg)
}

/// `WDIOC_KEEPALIVE`: pets the watchdog.
pub fn watchdog_keepalive(fd: impl AsFd) -> io::Result<()> {
    watchdog_ioctl(fd.as_fd(), wdioc::KEEPALIVE, 0).map(|_| ())
}

/// `WDIOC_SETTIMEOUT`: returns the timeout the driver really set (it may
/// round to what the hardware can count).
pub fn watchdog_settimeout(fd: impl AsFd, seconds: i32) -> io::Result<i32> {
    watchdog_ioctl(fd.as_fd(), wdioc::SETTIMEOUT, seconds)
}

/// `WDIOC_GETTIMEOUT`.
pub fn watchdog_gettimeout(fd: impl AsFd) -> io::Result<i32> {
    watchdog_ioctl(fd.as_fd(), wdioc::GETTIMEOUT, 0)
}

/// `WDIOC_SETOPTIONS` with `WDIOS_DISABLECARD` or `WDIOS_ENABLECARD`.
pub fn watchdog_setoptions(fd: impl AsFd, options: i32) -> io::Result<()> {
    watchdog_ioctl(fd.as_fd(), wdioc::SETOPTIONS, options).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_requests_are_the_kernels() {
        // _IOR('W', n, int) = dir 2 << 30 | size 4 << 16 | 'W' << 8 | n, and
        // _IOWR is dir 3.
        let ior = |n: libc::c_ulong| (2 << 30) | (4 << 16) | (libc::c_ulong::from(b'W') << 8) | n;
        assert_eq!(wdioc::SETOPTIONS, ior(4));
        assert_eq!(wdioc::KEEPALIVE, ior(5));
        assert_eq!(wdioc::SETTIMEOUT, ior(6) | (1 << 30));
        assert_eq!(wdioc::GETTIMEOUT, ior(7));
    }

    #[test]
    fn loop_structs_have_the_kernels_layout() {
        // <linux/loop.h>: struct loop_info64 is 232 bytes, struct
        // loop_config 4 + 4 + 232 + 64 = 304, with info at offset 8.
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::offset_of!(LoopInfo64, lo_flags), 52);
        assert_eq!(std::mem::offset_of!(LoopInfo64, lo_file_name), 56);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
        assert_eq!(std::mem::offset_of!(LoopConfig, info), 8);
    }
}

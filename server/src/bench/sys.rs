//! The operating system's side: the open-file limit, local ports and source addresses, and a
//! server process's memory and CPU time from /proc.

use std::net::{IpAddr, Ipv4Addr};

/// Raises the soft open-file limit to the hard limit; returns the limit now in force.
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
        Some(lim.rlim_cur)
    }
    #[cfg(not(unix))]
    None
}

/// How many ephemeral ports one source address has (Linux's `ip_local_port_range`).
pub fn ephemeral_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<usize>().ok());
            let (lo, hi) = (it.next()??, it.next()??);
            (hi >= lo).then(|| hi - lo + 1)
        })
        .unwrap_or(28_232)
}

/// The source addresses to spread `n` connections to `target` over: empty when one address
/// has ports enough (or the target is not IPv4 loopback, where other sources do not exist).
///
/// Uses at most three quarters of each address's `ports`, leaving room for other programs and
/// for connections still in TIME_WAIT.
pub fn source_addresses(target: IpAddr, n: usize, ports: usize) -> Vec<IpAddr> {
    let IpAddr::V4(v4) = target else {
        return Vec::new();
    };
    if !v4.is_loopback() {
        return Vec::new();
    }
    let per_address = (ports * 3 / 4).max(1);
    let needed = n.div_ceil(per_address);
    if needed <= 1 {
        return Vec::new();
    }
    // 127.0.0.1, 127.0.0.2, ..., 127.0.0.254, 127.0.1.1, ...: all of 127/8 is loopback.
    (0..needed.min(254 * 256))
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, (i / 254) as u8, (i % 254 + 1) as u8)))
        .collect()
}

/// Lets a socket bound to a source address pick its port at connect time, from the whole
/// 4-tuple, instead of at bind time from the ports free on that address alone.
pub fn bind_address_no_port(socket: &tokio::net::TcpSocket) {
    #[cfg(target_os = "linux")]
    switch_on(socket, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT);
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// Asks the kernel to stamp every segment `socket` receives with the time it arrived
/// (`SO_TIMESTAMPNS`), so that a subscriber can tell when an event reached it apart from when
/// this process got around to reading it. Linux only; elsewhere reads carry no stamp.
pub fn stamp_arrivals(socket: &tokio::net::TcpSocket) {
    #[cfg(target_os = "linux")]
    switch_on(socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS);
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// Sets a boolean socket option; best effort (a kernel without it leaves the default).
#[cfg(target_os = "linux")]
fn switch_on(socket: &tokio::net::TcpSocket, level: libc::c_int, name: libc::c_int) {
    use std::os::fd::AsRawFd as _;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a c_int option value of the size we pass.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// One non-blocking `recvmsg` from `fd` into `buf`'s spare capacity (extending `buf` by what
/// was read). Returns how many bytes, and, when the kernel stamped the segments
/// ([`stamp_arrivals`]), how many microseconds ago the last segment read arrived.
#[cfg(target_os = "linux")]
pub fn recv_stamped(
    fd: std::os::fd::RawFd,
    buf: &mut Vec<u8>,
) -> std::io::Result<(usize, Option<u64>)> {
    let spare = buf.spare_capacity_mut();
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    // Room for one SCM_TIMESTAMPNS control message, aligned for `cmsghdr`.
    let mut control = [0u64; 8];
    // SAFETY: `msghdr` is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at a live iovec over `buf`'s spare capacity and at `control`.
    let n = unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialized the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    let mut arrived = None;
    // SAFETY: walking the control messages the kernel wrote into `control`, as described by
    // `msg`; a timestamp message carries one `timespec`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                arrived = Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<libc::timespec>(),
                ));
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    // The stamp is CLOCK_REALTIME, which is what `SystemTime` reads.
    let age_us = arrived.and_then(|at| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        let at = std::time::Duration::new(u64::try_from(at.tv_sec).ok()?, at.tv_nsec as u32);
        u64::try_from(now.checked_sub(at)?.as_micros()).ok()
    });
    Ok((n, age_us))
}

/// Makes closing `stream` send a reset instead of a FIN, so the closed connection does not sit
/// in TIME_WAIT holding its port: the next run's 10,000 connects then find free ports at once
/// (with them held, connecting took twice the CPU).
pub fn reset_on_close(stream: &tokio::net::TcpStream) {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd as _;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket descriptor and a `linger` value of the size we pass.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(unix))]
    let _ = stream;
}

/// A process's resident memory and CPU time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessSample {
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
}

/// Reads `pid`'s memory and CPU time from /proc.
pub fn sample_process(pid: u32) -> std::io::Result<ProcessSample> {
    let invalid = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("cannot read {what} of process {pid}"),
        )
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(ProcessSample {
        rss_kib: vm_rss_kib(&status).ok_or_else(|| invalid("VmRSS"))?,
        cpu_ticks: cpu_ticks(&stat).ok_or_else(|| invalid("the CPU time"))?,
    })
}

/// Clock ticks per second, for [`ProcessSample::cpu_ticks`].
pub fn ticks_per_second() -> f64 {
    #[cfg(unix)]
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    #[cfg(not(unix))]
    let ticks = 100;
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// The shortest window, in clock ticks, over which a tick count is turned into busy cores: a
/// count can be off by about a tick at each end, which over a 5 ms window (half a tick) would
/// read as several cores.
pub const MIN_BUSY_WINDOW_TICKS: f64 = 10.0;

/// How many cores `busy_ticks` (CPU clock ticks, summed over cores) kept busy over `wall_s`
/// seconds, for the report's `*busy_cores` figures.
///
/// `None` ("-" in the report, null in JSON) when the window is shorter than
/// [`MIN_BUSY_WINDOW_TICKS`] (100 ms at the usual 100 ticks per second): too short to say.
/// Over longer windows the tick rounding can still overshoot a little, so the figure is capped
/// at `cpus`, the most a machine (or a process on it) can keep busy.
pub fn busy_cores(busy_ticks: u64, ticks_per_s: f64, wall_s: f64, cpus: usize) -> Option<f64> {
    let long_enough = wall_s * ticks_per_s >= MIN_BUSY_WINDOW_TICKS;
    long_enough.then(|| (busy_ticks as f64 / ticks_per_s / wall_s).min(cpus.max(1) as f64))
}

/// The CPUs online: what /proc/stat's aggregate line sums over.
pub fn cpu_count() -> usize {
    #[cfg(unix)]
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    #[cfg(not(unix))]
    let online = 0;
    match usize::try_from(online) {
        Ok(n) if n > 0 => n,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// CPU time the whole machine spent busy (all cores, anything but idle and I/O wait), in
/// clock ticks.
pub fn machine_busy_ticks() -> Option<u64> {
    busy_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The busy ticks of /proc/stat's aggregate `cpu` line.
pub fn busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find_map(|l| l.strip_prefix("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    let total: u64 = ticks.iter().take(8).sum();
    Some(total - ticks.get(3)? - ticks.get(4).copied().unwrap_or(0))
}

/// The `VmRSS:` line of /proc/PID/status, in KiB.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// utime + stime (fields 14 and 15) of /proc/PID/stat, in clock ticks.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces and parentheses.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_comes_from_the_status_file() {
        let status = "Name:\therald\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(vm_rss_kib(status), Some(12345));
        assert_eq!(vm_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_ticks_add_utime_and_stime_even_with_an_odd_command_name() {
        let stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1 2 3";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_and_io_wait() {
        let stat = "cpu  100 5 50 1000 20 3 7 2 0 0\ncpu0 50 2 25 500 10 1 3 1 0 0\n";
        assert_eq!(busy_ticks(stat), Some(167));
        assert_eq!(busy_ticks("intr 1 2\n"), None);
    }

    #[test]
    fn busy_cores_are_not_guessed_from_a_window_of_a_few_ticks() {
        // The tester's case: 3 ticks (30 ms) counted over a 10.6 ms connect phase read as
        // 2.82 cores on a 2-core machine.
        assert_eq!(busy_cores(3, 100.0, 0.0106, 2), None);
        assert_eq!(busy_cores(0, 100.0, 0.0, 2), None);
        assert_eq!(busy_cores(9, 100.0, 0.099, 2), None);
    }

    #[test]
    fn busy_cores_never_pass_the_cpu_count() {
        assert_eq!(busy_cores(23, 100.0, 0.1, 2), Some(2.0));
        assert_eq!(busy_cores(150, 100.0, 1.0, 2), Some(1.5));
        assert_eq!(busy_cores(10, 1000.0, 0.01, 4), Some(1.0));
        assert_eq!(busy_cores(50, 100.0, 0.5, 0), Some(1.0));
        assert!(cpu_count() >= 1);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let sample = sample_process(std::process::id()).unwrap();
        assert!(sample.rss_kib > 0);
    }

    #[test]
    fn source_addresses_are_spread_only_on_loopback_and_only_when_needed() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(source_addresses(lo, 10_000, 28_232).is_empty());
        let spread = source_addresses(lo, 50_000, 28_232);
        assert_eq!(spread.len(), 3);
        assert_eq!(spread[0], "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(spread[2], "127.0.0.3".parse::<IpAddr>().unwrap());
        assert!(source_addresses("10.0.0.1".parse().unwrap(), 50_000, 28_232).is_empty());
        assert!(source_addresses("::1".parse().unwrap(), 50_000, 28_232).is_empty());
        let many = source_addresses(lo, 300 * 3, 4);
        assert_eq!(many.len(), 300);
        assert_eq!(many[254], "127.0.1.1".parse::<IpAddr>().unwrap());
    }
}

//! Kernel uevents, as udev hears them on `NETLINK_KOBJECT_UEVENT`: one
//! datagram per event, `ACTION@DEVPATH\0` followed by `KEY=VALUE\0` pairs.
//! Pure parsing; the socket is in [`crate::sys::socket_netlink_uevent`].

/// The fields of one uevent that the device wait uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Uevent {
    pub action: String,
    pub devpath: String,
    pub subsystem: String,
    /// The node under /dev (`vda1`), if the device has one.
    pub devname: Option<String>,
    /// `disk` or `partition` for block devices.
    pub devtype: Option<String>,
}

/// Longest value kept, far above any real one: a hostile or corrupt message
/// cannot make the init hold large strings.
const MAX_VALUE: usize = 4096;

/// Parses one datagram. Messages from udev itself (`libudev` magic) and
/// anything malformed give `None`: only the kernel's own format counts.
pub fn parse(datagram: &[u8]) -> Option<Uevent> {
    let mut fields = datagram.split(|&b| b == 0).filter(|f| !f.is_empty());
    let header = std::str::from_utf8(fields.next()?).ok()?;
    let (action, devpath) = header.split_once('@')?;
    let mut event = Uevent {
        action: action.to_owned(),
        devpath: devpath.to_owned(),
        ..Uevent::default()
    };
    for field in fields {
        let Ok(text) = std::str::from_utf8(field) else {
            continue;
        };
        let Some((key, value)) = text.split_once('=') else {
            continue;
        };
        if value.len() > MAX_VALUE {
            return None;
        }
        match key {
            "ACTION" => event.action = value.to_owned(),
            "DEVPATH" => event.devpath = value.to_owned(),
            "SUBSYSTEM" => event.subsystem = value.to_owned(),
            "DEVNAME" => event.devname = Some(value.to_owned()),
            "DEVTYPE" => event.devtype = Some(value.to_owned()),
            _ => {}
        }
    }
    if event.action.is_empty() || event.devpath.is_empty() {
        return None;
    }
    Some(event)
}

impl Uevent {
    /// A block device (disk or partition) that appeared or changed — the
    /// moments a root device may become readable (a CD's `change` is media
    /// inserted).
    pub fn block_device_ready(&self) -> Option<&str> {
        if self.subsystem == "block" && matches!(self.action.as_str(), "add" | "change") {
            self.devname.as_deref()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_block_event_is_read() {
        // As the 6.1 kernel sends it for a virtio disk's first partition.
        let msg = b"add@/devices/pci0000:00/0000:00:03.0/virtio1/block/vda/vda1\0\
ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:03.0/virtio1/block/vda/vda1\0\
SUBSYSTEM=block\0MAJOR=254\0MINOR=1\0DEVNAME=vda1\0DEVTYPE=partition\0\
DISKSEQ=1\0PARTN=1\0SEQNUM=1234\0";
        let e = parse(msg).unwrap();
        assert_eq!(e.action, "add");
        assert_eq!(e.subsystem, "block");
        assert_eq!(e.devtype.as_deref(), Some("partition"));
        assert_eq!(e.block_device_ready(), Some("vda1"));
        let change = parse(b"change@/devices/x/block/sr0\0ACTION=change\0DEVPATH=/devices/x/block/sr0\0SUBSYSTEM=block\0DEVNAME=sr0\0DEVTYPE=disk\0").unwrap();
        assert_eq!(change.block_device_ready(), Some("sr0"));
    }

    #[test]
    fn other_events_and_garbage_are_not_devices() {
        let remove =
            parse(b"remove@/devices/x/block/vdb\0ACTION=remove\0SUBSYSTEM=block\0DEVNAME=vdb\0")
                .unwrap();
        assert_eq!(remove.block_device_ready(), None);
        let net =
            parse(b"add@/devices/x/net/eth0\0ACTION=add\0SUBSYSTEM=net\0INTERFACE=eth0\0").unwrap();
        assert_eq!(net.block_device_ready(), None);
        // udev's own broadcast starts with "libudev" and has no '@'.
        assert_eq!(parse(b"libudev\0\xfe\xed\xca\xfe"), None);
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"@\0"), None);
        let mut huge = b"add@/x\0DEVNAME=".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_VALUE + 1));
        assert_eq!(parse(&huge), None);
    }
}

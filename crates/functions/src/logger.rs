//! Writes every packet it sees to a pcap file (LINKTYPE_RAW: packets start at the IP header),
//! which Wireshark and tshark open as is. A non-intrusive logger records ESP packets.
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use std::io::Write;
use zsfc_dataplane::{PacketBuf, ServiceFunction, SfContext, SfVerdict};

/// The packet logger SF. A failed write is counted; the packet passes anyway.
pub struct PacketLogger {
    writer: Option<PcapWriter<Box<dyn Write + Send>>>,
    snaplen: usize,
    logged: u64,
    errors: u64,
}

impl core::fmt::Debug for PacketLogger {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PacketLogger").field("logged", &self.logged).field("errors", &self.errors).finish()
    }
}

impl PacketLogger {
    /// Writes the pcap header to `sink` now; each packet is cut to `snaplen` bytes.
    pub fn new(sink: Box<dyn Write + Send>, snaplen: usize) -> std::io::Result<Self> {
        let header = PcapHeader { datalink: DataLink::RAW, snaplen: snaplen as u32, ..Default::default() };
        let writer = PcapWriter::with_header(sink, header).map_err(std::io::Error::other)?;
        Ok(Self { writer: Some(writer), snaplen, logged: 0, errors: 0 })
    }

    /// Flushes and returns the sink.
    pub fn into_inner(mut self) -> Option<Box<dyn Write + Send>> {
        self.writer.take().map(PcapWriter::into_writer)
    }
}

impl ServiceFunction for PacketLogger {
    fn kind(&self) -> &'static str {
        "logger"
    }
    fn process(&mut self, ctx: &SfContext<'_>, pkt: PacketBuf) -> SfVerdict {
        let data = pkt.as_slice();
        let cut = &data[..data.len().min(self.snaplen)];
        let ts = core::time::Duration::from_nanos(ctx.now.as_nanos());
        let ok =
            self.writer.as_mut().is_some_and(|w| w.write_packet(&PcapPacket::new(ts, data.len() as u32, cut)).is_ok());
        if ok {
            self.logged += 1;
        } else {
            self.errors += 1;
        }
        SfVerdict::Pass(pkt)
    }
    fn counters(&self, out: &mut dyn FnMut(&'static str, u64)) {
        out("logged", self.logged);
        out("write_errors", self.errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simple::testutil::*;
    use std::sync::{Arc, Mutex};
    use zsfc_dataplane::Instant;

    /// A fake file: a shared byte vector.
    #[derive(Clone, Default)]
    struct FakeFile(Arc<Mutex<Vec<u8>>>);
    impl Write for FakeFile {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_a_pcap_that_reads_back() {
        let file = FakeFile::default();
        let mut l = PacketLogger::new(Box::new(file.clone()), 65535).unwrap();
        let p1 = v4(6, [1; 4], 1, [2; 4], 2, b"one");
        let p2 = v4(17, [1; 4], 1, [2; 4], 2, b"two");
        for (t, p) in [(1, &p1), (2, &p2)] {
            assert!(matches!(l.process(&ctx(Instant::from_millis(t)), PacketBuf::from_slice(p)), SfVerdict::Pass(_)));
        }
        drop(l.into_inner());
        let bytes = file.0.lock().unwrap().clone();
        assert!(matches!(&bytes[..4], [0xa1, 0xb2, 0xc3, 0xd4] | [0xd4, 0xc3, 0xb2, 0xa1]), "pcap magic");
        let mut r = pcap_file::pcap::PcapReader::new(&bytes[..]).unwrap();
        assert_eq!(r.header().datalink, DataLink::RAW);
        let a = r.next_packet().unwrap().unwrap();
        assert_eq!(&a.data[..], &p1[..]);
        assert_eq!(a.timestamp, core::time::Duration::from_millis(1));
        assert_eq!(&r.next_packet().unwrap().unwrap().data[..], &p2[..]);
        assert!(r.next_packet().is_none());
    }
}

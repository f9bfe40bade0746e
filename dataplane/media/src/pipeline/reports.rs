//! RTCP per leg: reading what the far end reports, and sending our SR/RR
//! with an SDES CNAME every `rtcp_interval`.

use super::{DropReason, Event, Leg, PacketKind, Pipeline, Verdict};
use crate::latch::{LatchVerdict, Stream};
use crate::rtcp::{Compound, CompoundWriter, RtcpPacket, SenderInfo};
use std::net::SocketAddr;
use std::time::{Instant, UNIX_EPOCH};

impl Pipeline {
    /// A datagram on `leg`'s RTCP socket.
    pub fn handle_rtcp(&mut self, now: Instant, leg: Leg, src: SocketAddr, data: &[u8]) -> Verdict {
        let Some(l) = &mut self.legs[leg.index()] else {
            return Verdict::Dropped(DropReason::NoLeg);
        };
        let Ok(compound) = Compound::parse(data) else {
            l.stats.malformed += 1;
            return Verdict::Dropped(DropReason::Malformed);
        };
        // On a port of its own, RTCP is taken only from an IP the leg's RTP
        // knows as the far end's: a stranger's first report would teach
        // that port's latch where our reports go, and keep a dead call up.
        if !l.cfg.rtcp_mux && !l.latch.knows_ip(src.ip()) {
            l.stats.wrong_source += 1;
            return Verdict::Dropped(DropReason::WrongSource);
        }
        let latch = if l.cfg.rtcp_mux {
            &mut l.latch
        } else {
            &mut l.rtcp_latch
        };
        // With rtcp-mux the RTP latch is shared, so an RTCP packet can be
        // the one that learns (or moves) where the leg's RTP goes: that is
        // reported like any other latch. A separate RTCP port's latch only
        // decides where our reports go.
        let learned = match latch.check(now, src, Stream::Rtcp) {
            LatchVerdict::Drop => {
                l.stats.wrong_source += 1;
                return Verdict::Dropped(DropReason::WrongSource);
            }
            LatchVerdict::Learned(address) if l.cfg.rtcp_mux => Some(address),
            LatchVerdict::Learned(_) | LatchVerdict::Accept => None,
        };
        l.stats.rtcp_in += 1;
        let ours = l.rewriter.ssrc();
        for p in compound.packets() {
            let reports = match p {
                RtcpPacket::SenderReport {
                    ssrc,
                    info,
                    reports,
                } => {
                    if Some(ssrc) == l.remote_ssrc {
                        l.recv.on_sender_report(now, info.ntp);
                    }
                    reports
                }
                RtcpPacket::ReceiverReport { reports, .. } => reports,
                _ => continue,
            };
            for r in reports.iter().filter(|r| r.ssrc == ours) {
                l.stats.far_fraction_lost = r.fraction_lost;
                l.stats.far_cumulative_lost = r.cumulative_lost;
                l.stats.far_jitter = r.jitter;
            }
        }
        if let Some(address) = learned {
            self.emit(Event::Latched { leg, address });
        }
        Verdict::Consumed
    }

    /// Sends an SR (if we have sent on the leg) or RR, with SDES CNAME,
    /// and a BYE for our source when `bye` (the leg is ending).
    pub(super) fn send_report(&mut self, now: Instant, i: usize, bye: bool) {
        let ntp = self.ntp(now);
        let Some(l) = &mut self.legs[i] else { return };
        let Some(dst) = l.rtcp_destination() else {
            return;
        };
        let kind = if l.cfg.rtcp_mux {
            PacketKind::Rtp
        } else {
            PacketKind::Rtcp
        };
        let Some(slot) = self.tx.push(l.leg, kind, dst) else {
            l.stats.queue_full += 1;
            return;
        };
        let ours = l.rewriter.ssrc();
        let block = match l.remote_ssrc {
            Some(ssrc) if l.recv.received() > 0 => Some(l.recv.report_block(now, ssrc)),
            _ => None,
        };
        let blocks = block.as_slice();
        let cname_len = self.cfg.cname.iter().position(|&c| c == 0).unwrap_or(16);
        let mut w = CompoundWriter::new(&mut slot.buf);
        let res = if l.send.packets > 0 {
            let info = SenderInfo {
                ntp,
                rtp_timestamp: l.send.rtp_ts_at(now, l.cfg.codec.clock_rate),
                packet_count: l.send.packets as u32,
                octet_count: l.send.octets as u32,
            };
            w.sender_report(ours, &info, blocks)
        } else {
            w.receiver_report(ours, blocks)
        }
        .and_then(|_| w.sdes_cname(ours, &self.cfg.cname[..cname_len]))
        .and_then(|_| if bye { w.bye(ours) } else { Ok(()) });
        let n = w.len();
        if res.is_err() {
            self.tx.unpush();
            return;
        }
        slot.len = n;
        l.stats.rtcp_out += 1;
    }

    fn ntp(&self, now: Instant) -> u64 {
        let Some((at, wall)) = self.cfg.wallclock else {
            return 0;
        };
        let t = if now >= at {
            wall + (now - at)
        } else {
            wall - (at - now)
        };
        let Ok(d) = t.duration_since(UNIX_EPOCH) else {
            return 0;
        };
        let secs = d.as_secs() + 2_208_988_800;
        let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        (secs << 32) | frac
    }
}

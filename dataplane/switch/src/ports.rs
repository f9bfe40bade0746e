//! RTP port allocation from `CODEB_RTP_PORTS`: even ports for RTP, the odd
//! port above each for RTCP (RFC 3550 §11). Allocation is round-robin, so a
//! port just freed is the last to be reused (late packets of an ended call
//! do not land in a new one).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    #[error("RTP port range must look like 20000-29999, got {0:?}")]
    Syntax(String),
    #[error("RTP port range {0}-{1} holds no even/odd port pair")]
    Empty(u16, u16),
}

/// A parsed `CODEB_RTP_PORTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl std::str::FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<PortRange, PortRangeError> {
        let err = || PortRangeError::Syntax(s.to_owned());
        let (a, b) = s.split_once('-').ok_or_else(err)?;
        let first: u16 = a.trim().parse().map_err(|_| err())?;
        let last: u16 = b.trim().parse().map_err(|_| err())?;
        if first == 0 || last < first {
            return Err(err());
        }
        let even_first = first + first % 2;
        if u32::from(even_first) + 1 > u32::from(last) {
            return Err(PortRangeError::Empty(first, last));
        }
        Ok(PortRange { first, last })
    }
}

/// Hands out RTP ports (even, with the odd one above kept for RTCP).
#[derive(Debug)]
pub struct PortPool {
    base: u16,
    used: Vec<bool>,
    next: usize,
    in_use: usize,
}

impl PortPool {
    pub fn new(range: PortRange) -> PortPool {
        let base = range.first + range.first % 2;
        let pairs = (usize::from(range.last) - usize::from(base)).div_ceil(2);
        PortPool {
            base,
            used: vec![false; pairs],
            next: 0,
            in_use: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.used.len()
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// An even RTP port, or None when every pair is taken.
    pub fn allocate(&mut self) -> Option<u16> {
        let n = self.used.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if !self.used[i] {
                self.used[i] = true;
                self.next = (i + 1) % n;
                self.in_use += 1;
                return u16::try_from(i * 2).ok().map(|off| self.base + off);
            }
        }
        None
    }

    /// The pair index of an RTP port of this pool's range.
    fn index(&self, port: u16) -> Option<usize> {
        let off = port.checked_sub(self.base)?;
        let i = usize::from(off / 2);
        (off.is_multiple_of(2) && i < self.used.len()).then_some(i)
    }

    /// Whether `port` is an RTP port of this pool's range, taken or not.
    pub fn covers(&self, port: u16) -> bool {
        self.index(port).is_some()
    }

    /// Returns a port; unknown or free ports are ignored.
    pub fn release(&mut self, port: u16) {
        let Some(i) = self.index(port) else {
            return;
        };
        if let Some(slot) = self.used.get_mut(i)
            && *slot
        {
            *slot = false;
            self.in_use -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(
            "20000-29999".parse::<PortRange>().unwrap(),
            PortRange {
                first: 20000,
                last: 29999
            }
        );
        for bad in ["", "20000", "x-y", "3000-2000", "0-10"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
        assert_eq!(
            "5001-5001".parse::<PortRange>(),
            Err(PortRangeError::Empty(5001, 5001))
        );
        assert!("5001-5003".parse::<PortRange>().is_ok(), "5002/5003");
    }

    #[test]
    fn allocation() {
        let mut p = PortPool::new("10001-10006".parse().unwrap());
        assert_eq!(p.capacity(), 2);
        assert_eq!(p.allocate(), Some(10002));
        assert_eq!(p.allocate(), Some(10004));
        assert_eq!(p.allocate(), None, "exhausted");
        p.release(10002);
        p.release(10002);
        p.release(10003);
        assert_eq!(p.in_use(), 1);
        assert_eq!(p.allocate(), Some(10002));
        assert!(p.covers(10002) && p.covers(10004));
        for other in [10000, 10003, 10006, 0, u16::MAX] {
            assert!(!p.covers(other), "{other}");
        }
    }
}

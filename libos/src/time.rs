//! Time from kvmclock (pvclock): the host publishes a TSC-to-nanoseconds
//! conversion in a page we own, so reading the clock is rdtsc plus arithmetic
//! at CPL3, with no VM exit. Both boot paths register that page.

#[cfg(not(test))]
use crate::arch::{cpu, image};

/// `struct pvclock_vcpu_time_info`, read consistently (the host updates it).
#[derive(Clone, Copy, Default)]
pub struct PvClock {
    pub version: u32,
    pub tsc_timestamp: u64,
    pub system_time: u64,
    pub mul: u32,
    pub shift: i8,
}

impl PvClock {
    /// Whether the host published a usable conversion.
    pub fn valid(&self) -> bool {
        self.version != 0 && self.mul != 0
    }

    /// The clock at TSC value `tsc`: system_time plus the TSC delta scaled
    /// by 2^shift and mul/2^32, as the kernel's pvclock_scale_delta.
    pub fn ns_at(&self, tsc: u64) -> u64 {
        let mut delta = tsc.wrapping_sub(self.tsc_timestamp);
        let shift = i32::from(self.shift);
        delta = if shift < 0 {
            delta.checked_shr(shift.unsigned_abs()).unwrap_or(0)
        } else {
            delta.checked_shl(shift.unsigned_abs()).unwrap_or(0)
        };
        self.system_time
            .wrapping_add(((delta as u128 * self.mul as u128) >> 32) as u64)
    }
}

/// Nanoseconds since the VM's clock started.
#[cfg(not(test))]
pub fn monotonic_ns() -> u64 {
    let c = image::read_pvclock();
    if !c.valid() {
        return fallback_ns();
    }
    c.ns_at(cpu::rdtsc())
}

/// Nanoseconds since the Unix epoch.
#[cfg(not(test))]
pub fn realtime_ns() -> u64 {
    let (sec, nsec) = image::read_wall_clock();
    wall_ns(sec, nsec, monotonic_ns())
}

/// The wall clock when the pvclock read zero, plus the pvclock now.
pub fn wall_ns(sec: u32, nsec: u32, monotonic: u64) -> u64 {
    (sec as u64) * 1_000_000_000 + nsec as u64 + monotonic
}

/// Host unit tests: the host's clocks (the monotonic one starting at 1 s,
/// so that it never reads 0, which means "disarmed" to the timers).
#[cfg(test)]
pub fn monotonic_ns() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    1_000_000_000
        + START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_nanos() as u64
}

#[cfg(test)]
pub fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The TSC frequency in kHz from CPUID leaf 0x15 (eax, ebx, ecx: TSC/crystal
/// ratio and crystal Hz), else leaf 0x16 (eax: base MHz, only asked for
/// when needed: CPUID is a VM exit), else 1 GHz.
pub fn tsc_khz(l15: (u32, u32, u32), l16_eax: impl FnOnce() -> u32) -> u64 {
    let (eax, ebx, ecx) = l15;
    if eax != 0 && ebx != 0 && ecx != 0 {
        return ecx as u64 * ebx as u64 / eax as u64 / 1000;
    }
    let l16_eax = l16_eax();
    if l16_eax != 0 {
        return l16_eax as u64 * 1000;
    }
    1_000_000
}

/// Nanoseconds for `tsc` ticks at `khz`.
pub fn tsc_to_ns(tsc: u64, khz: u64) -> u64 {
    ((tsc as u128 * 1_000_000) / khz as u128) as u64
}

/// Without kvmclock: the TSC at the frequency CPUID reports (leaf 0x15, then
/// 0x16), or 1 GHz if it reports none. Only reached under VMMs that hide
/// kvmclock; the wall clock then starts at the epoch.
#[cfg(not(test))]
fn fallback_ns() -> u64 {
    static KHZ: spin::Once<u64> = spin::Once::new();
    let khz = *KHZ.call_once(|| {
        let l15 = cpu::cpuid(0x15, 0);
        tsc_khz((l15.eax, l15.ebx, l15.ecx), || cpu::cpuid(0x16, 0).eax)
    });
    tsc_to_ns(cpu::rdtsc(), khz)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(mul: u32, shift: i8) -> PvClock {
        PvClock {
            version: 2,
            tsc_timestamp: 1_000,
            system_time: 5_000,
            mul,
            shift,
        }
    }

    #[test]
    fn pvclock_scales_the_tsc_delta_like_pvclock_scale_delta() {
        // mul is a 32.32 fraction: 2^31 halves the delta.
        assert_eq!(clock(1 << 31, 0).ns_at(3_000), 5_000 + 1_000);
        // A negative shift divides first, a positive one multiplies.
        assert_eq!(clock(1 << 31, -1).ns_at(3_000), 5_000 + 500);
        assert_eq!(clock(1 << 31, 1).ns_at(3_000), 5_000 + 2_000);
        // mul = 2^32 - 1 is just under 1.0: the product is rounded down.
        assert_eq!(
            clock(u32::MAX, 0).ns_at(1_000 + (1 << 32)),
            5_000 + (1 << 32) - 1
        );
        // A shift past the width clears the delta instead of overflowing.
        assert_eq!(clock(1 << 31, -100).ns_at(3_000), 5_000);
    }

    #[test]
    fn pvclock_without_a_published_conversion_is_not_used() {
        assert!(!PvClock::default().valid());
        assert!(!clock(0, 0).valid());
        assert!(clock(1, 0).valid());
    }

    #[test]
    fn tsc_frequency_from_cpuid_leaves() {
        // Leaf 0x15: 24 MHz crystal, TSC/crystal = 100/2: 1.2 GHz. Leaf
        // 0x16 must not even be asked for.
        assert_eq!(
            tsc_khz((2, 100, 24_000_000), || panic!("leaf 0x16 read")),
            1_200_000
        );
        // Leaf 0x15 without the crystal frequency: leaf 0x16's base MHz.
        assert_eq!(tsc_khz((2, 100, 0), || 2_900), 2_900_000);
        // Neither: 1 GHz.
        assert_eq!(tsc_khz((0, 0, 0), || 0), 1_000_000);
        assert_eq!(tsc_to_ns(3_000_000_000, 3_000_000), 1_000_000_000);
        // No overflow for a TSC that has run for years at 4 GHz.
        assert_eq!(tsc_to_ns(u64::MAX, 4_000_000), u64::MAX / 4);
    }

    #[test]
    fn wall_clock_is_boot_time_plus_monotonic() {
        assert_eq!(
            wall_ns(1_700_000_000, 250, 1_000),
            1_700_000_000_000_001_250
        );
    }

    #[test]
    fn host_clocks_move_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a >= 1_000_000_000 && b >= a);
        // After 2020-01-01.
        assert!(realtime_ns() > 1_577_836_800_000_000_000);
    }
}

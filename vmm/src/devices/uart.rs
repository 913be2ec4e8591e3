//! COM1: a 16550A UART (vm-superio's) whose output goes to the guest's
//! console and whose receive FIFO is filled from the console's input when
//! the guest polls the line status register. There is no interrupt
//! controller in this runner, so the guest polls and the IRQ line is a no-op.
//!
//! docs/ARCHITECTURE.md §4.

use serde::{Deserialize, Serialize};
use vm_superio::Serial;
use vm_superio::serial::{NoEvents, SerialState};

use crate::bus::{Action, BusDevice, Ctx};
use crate::console::NoIrq;

const LSR: u8 = 5;
const LSR_DATA_READY: u8 = 1;
/// The 16550A's receive FIFO.
const FIFO: usize = 64;

/// Bytes the guest wrote to THR, moved to the console after each write.
pub(crate) struct Uart {
    serial: Serial<NoIrq, NoEvents, Vec<u8>>,
}

/// The UART's registers and receive FIFO, as a snapshot keeps them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UartState {
    pub version: u32,
    baud_divisor_low: u8,
    baud_divisor_high: u8,
    interrupt_enable: u8,
    interrupt_identification: u8,
    line_control: u8,
    line_status: u8,
    modem_control: u8,
    modem_status: u8,
    scratch: u8,
    in_buffer: Vec<u8>,
}

impl UartState {
    pub(crate) const VERSION: u32 = 1;
}

impl Uart {
    pub(crate) fn new() -> Uart {
        Uart {
            serial: Serial::new(NoIrq, Vec::new()),
        }
    }

    pub(crate) fn state(&self) -> UartState {
        let s = self.serial.state();
        UartState {
            version: UartState::VERSION,
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }

    /// Checks a saved state: everything [`Uart::restore`] would refuse.
    pub(crate) fn check(state: &UartState) -> Result<(), String> {
        Uart::restore(state).map(drop)
    }

    pub(crate) fn restore(state: &UartState) -> Result<Uart, String> {
        super::check_version("UART", state.version, UartState::VERSION)?;
        if state.in_buffer.len() > FIFO {
            return Err("the UART input buffer is longer than its FIFO".into());
        }
        let s = SerialState {
            baud_divisor_low: state.baud_divisor_low,
            baud_divisor_high: state.baud_divisor_high,
            interrupt_enable: state.interrupt_enable,
            interrupt_identification: state.interrupt_identification,
            line_control: state.line_control,
            line_status: state.line_status,
            modem_control: state.modem_control,
            modem_status: state.modem_status,
            scratch: state.scratch,
            in_buffer: state.in_buffer.clone(),
        };
        Serial::from_state(&s, NoIrq, NoEvents, Vec::new())
            .map(|serial| Uart { serial })
            .map_err(|e| format!("the UART state is inconsistent ({e:?})"))
    }

    /// Moves input that is available right now into an empty receive FIFO,
    /// so a guest polling the line status register sees "data ready".
    fn refill(&mut self, ctx: &mut Ctx) {
        if self.serial.read(LSR) & LSR_DATA_READY != 0 {
            return;
        }
        let mut buf = [0u8; FIFO];
        let room = self.serial.fifo_capacity().min(buf.len());
        let n = ctx.console.input.read_now(&mut buf[..room]);
        if n > 0 {
            let _ = self.serial.enqueue_raw_bytes(&buf[..n]);
        }
    }
}

impl BusDevice for Uart {
    fn read(&mut self, ctx: &mut Ctx, offset: u64, data: &mut [u8]) {
        let offset = offset as u8;
        if offset == LSR {
            self.refill(ctx);
        }
        for b in data.iter_mut() {
            *b = self.serial.read(offset);
        }
    }

    fn write(&mut self, ctx: &mut Ctx, offset: u64, data: &[u8]) -> Action {
        for &b in data {
            if let Err(e) = self.serial.write(offset as u8, b) {
                log::debug!("vmm: serial output failed: {e:?}");
            }
        }
        let out = std::mem::take(self.serial.writer_mut());
        if !out.is_empty()
            && let Err(e) = ctx.console.write(&out)
        {
            log::debug!("vmm: serial output failed: {e}");
        }
        // As the guest wrote it: a prompt must show before the guest polls
        // for the answer.
        ctx.console.flush();
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_checks_its_version() {
        let mut u = Uart::new();
        // Line control: 8N1 with DLAB set, then a divisor.
        let _ = u.serial.write(3, 0x83);
        let _ = u.serial.write(0, 0x0c);
        let _ = u.serial.enqueue_raw_bytes(b"abc");
        let s = u.state();
        let back = Uart::restore(&s).unwrap();
        assert_eq!(back.state(), s);
        let mut old = s.clone();
        old.version = 0;
        assert!(Uart::restore(&old).err().unwrap().contains("version 0"));
        let mut big = s;
        big.in_buffer = vec![0; FIFO + 1];
        assert!(Uart::restore(&big).is_err());
    }
}

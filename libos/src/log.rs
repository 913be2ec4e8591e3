//! libOS diagnostics (`log!`), sent on the platform's log channel: the
//! runner's stderr, never the program's console.

use core::fmt::{self, Write};

pub struct LineBuf {
    buf: [u8; 512],
    len: usize,
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

pub fn emit(args: fmt::Arguments) {
    let mut line = LineBuf {
        buf: [0; 512],
        len: 0,
    };
    let _ = line.write_fmt(args);
    if line.len == line.buf.len() {
        line.len -= 1;
    }
    line.buf[line.len] = b'\n';
    crate::platform::log(&line.buf[..line.len + 1]);
}

#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::log::emit(format_args!($($arg)*)) };
}

//! Where the local mode's own log lines go: to stderr, or, while the live panel owns the terminal, to
//! `local.log` in the report directory, the last few also shown in the panel (a line written to the terminal
//! under the panel would tear it).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::sync::Mutex;

/// Log lines the panel shows.
const RECENT: usize = 3;

struct Capture {
    file: Option<File>,
    recent: VecDeque<String>,
}

static CAPTURE: Mutex<Option<Capture>> = Mutex::new(None);

/// The writer given to the log subscriber.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

impl io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut capture = CAPTURE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match capture.as_mut() {
            // An event is written in one call, so its lines are whole.
            Some(capture) => {
                if let Some(file) = capture.file.as_mut() {
                    let _ = file.write_all(buf);
                }
                for line in String::from_utf8_lossy(buf).lines() {
                    if capture.recent.len() == RECENT {
                        capture.recent.pop_front();
                    }
                    capture.recent.push_back(line.to_owned());
                }
            }
            None => {
                let _ = io::stderr().write_all(buf);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// From now on log lines go to `file` (if it could be opened) and the panel, not to the terminal.
pub fn capture(file: Option<File>) {
    *CAPTURE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Capture {
        file,
        recent: VecDeque::new(),
    });
}

/// Log lines go to stderr again.
pub fn release() {
    *CAPTURE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
}

/// The last log lines written while captured.
pub fn recent() -> Vec<String> {
    CAPTURE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .as_ref()
        .map(|c| c.recent.iter().cloned().collect())
        .unwrap_or_default()
}

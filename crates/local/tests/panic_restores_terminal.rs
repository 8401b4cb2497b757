//! A panic while the live panel is up leaves the terminal usable: the alternate screen is left, and the cursor
//! shown again, before the panic's message is printed. The test runs itself as the child on a real
//! pseudo-terminal (`harness = false`: one program plays both parts); the child draws the panel and panics.

use std::io::Read as _;
use std::process::{Command, Stdio};

use local::record::Sample;
use local::view::{Frame, Live};

const CHILD: &str = "LOCAL_TEST_PANIC_UNDER_THE_PANEL";
const MESSAGE: &str = "a bug while the panel is up";

fn main() {
    if std::env::var_os(CHILD).is_some() {
        let history = [Sample::default()];
        let mut live = Live::start().expect("the child runs on a terminal");
        live.draw(&Frame {
            broker: "embedded",
            guarantee: "at-least-once",
            step: None,
            phase: "running",
            makers_started: 0,
            lag_threshold: 256,
            polling_interval_s: 5.0,
            total_dead_letters: 0,
            delivered_tabs: 0,
            history: &history,
            metrics: &[],
            events: &[],
        });
        panic!("{MESSAGE}");
    }

    let size = testkit::nix::pty::Winsize {
        ws_row: 30,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = testkit::nix::pty::openpty(Some(&size), None).expect("a pseudo-terminal");
    testkit::nix::fcntl::fcntl(
        &pty.master,
        testkit::nix::fcntl::FcntlArg::F_SETFD(testkit::nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .unwrap();
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut output = Vec::new();
        let mut buffer = [0u8; 4096];
        // Ends with EIO once the child has closed its side.
        while let Ok(n @ 1..) = master.read(&mut buffer) {
            output.extend_from_slice(&buffer[..n]);
        }
        output
    });
    let status = Command::new("setsid")
        .arg("--ctty")
        .arg(std::env::current_exe().unwrap())
        .env(CHILD, "1")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave))
        .status()
        .expect("setsid runs the child");
    let output = reader.join().unwrap();
    let text = String::from_utf8_lossy(&output);
    assert_eq!(status.code(), Some(101), "the child panicked:\n{text}");
    let find = |needle: &str| text.find(needle);
    let enter = find("\x1b[?1049h").expect("the panel took the alternate screen");
    let leave = find("\x1b[?1049l")
        .unwrap_or_else(|| panic!("the alternate screen was never left:\n{text}"));
    let shown =
        find("\x1b[?25h").unwrap_or_else(|| panic!("the cursor was never shown again:\n{text}"));
    let message = find(MESSAGE).expect("the panic's message");
    assert!(
        enter < leave && leave < message && shown < message,
        "restored before the message: enter {enter}, leave {leave}, cursor {shown}, message {message}"
    );
    println!("a panic under the live panel restores the terminal first: ok");
}

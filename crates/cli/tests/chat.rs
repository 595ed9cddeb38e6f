//! `ferrolm chat` as people use it, driven through pipes with real signals: Ctrl-C stops a
//! reply and keeps the conversation, twice at the prompt leaves; a full context drops the
//! oldest turns instead of ending the session; `/commands` never reach the model.
#![allow(clippy::unwrap_used)]

mod common;

use common::smollm2;

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `ferrolm chat` with everything it printed so far.
struct Chat {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

impl Chat {
    fn start(args: &[&str]) -> Chat {
        let model = smollm2();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolm"))
            .args(["chat", "-m", &model, "--temp", "0"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let stdin = child.stdin.take();
        let chat = Chat {
            child,
            stdin,
            stdout,
            stderr,
        };
        chat.wait_for_prompts(1);
        chat
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    fn ctrl_c(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn wait_until(&self, what: &str, done: impl Fn(&Chat) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "timed out waiting for {what}\nstdout: {}\nstderr: {}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until stderr shows `n` prompts (`> ` at the start of a line).
    fn wait_for_prompts(&self, n: usize) {
        self.wait_until(&format!("prompt {n}"), |c| prompts(&c.stderr()) >= n);
    }

    fn wait_exit(&mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "chat did not leave\nstderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prompts(stderr: &str) -> usize {
    stderr.matches("> ").count()
}

#[test]
fn ctrl_c_stops_a_reply_keeps_the_conversation_and_twice_at_the_prompt_leaves() {
    let mut chat = Chat::start(&["-n", "4000"]);
    chat.send("Write a very long story about a dragon who learns to bake bread.");
    chat.wait_until("the reply to start", |c| c.stdout().len() > 40);
    chat.ctrl_c();
    chat.wait_until("the reply to stop", |c| {
        c.stderr().contains("(reply stopped)")
    });
    chat.wait_for_prompts(2);
    let stopped_at = chat.stdout().len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(chat.stdout().len(), stopped_at, "the reply went on");

    // The conversation goes on, and keeps the interrupted turn.
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("conversation.json");
    chat.send(&format!("/save {}", saved.display()));
    chat.wait_for_prompts(3);
    let messages: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let roles: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant"], "{messages}");
    assert!(!messages[1]["content"].as_str().unwrap().is_empty());

    // An unknown command is refused, not sent to the model.
    let before = chat.stdout().len();
    chat.send("/bake");
    chat.wait_for_prompts(4);
    assert!(
        chat.stderr().contains("unknown command /bake"),
        "{}",
        chat.stderr()
    );
    assert_eq!(chat.stdout().len(), before);

    chat.ctrl_c();
    chat.wait_until("the hint", |c| c.stderr().contains("Ctrl-C again"));
    assert!(
        chat.child.try_wait().unwrap().is_none(),
        "one Ctrl-C at the prompt left"
    );
    chat.ctrl_c();
    assert_eq!(chat.wait_exit(), 0);
}

#[test]
fn a_full_context_drops_the_oldest_turns_and_the_session_goes_on() {
    let mut chat = Chat::start(&["-c", "96", "-n", "12"]);
    for (i, question) in ["Hi!", "What is bread?", "And butter?", "And jam?"]
        .iter()
        .enumerate()
    {
        chat.send(question);
        chat.wait_for_prompts(i + 2);
    }
    assert!(
        chat.stderr().contains("dropped the oldest"),
        "{}",
        chat.stderr()
    );
    // A message longer than the whole context is an error line; the chat stays.
    chat.send(&"bread ".repeat(200));
    chat.wait_for_prompts(6);
    assert!(
        chat.stderr().contains("error: your message needs"),
        "{}",
        chat.stderr()
    );
    chat.send("Thanks!");
    chat.wait_for_prompts(7);
    drop(chat.stdin.take());
    assert_eq!(chat.wait_exit(), 0);
}

#[test]
fn without_context_shift_a_full_context_is_said_and_nothing_is_dropped() {
    let mut chat = Chat::start(&["-c", "96", "-n", "12", "--no-context-shift"]);
    let mut refused = false;
    for (i, question) in [
        "Hi!",
        "What is bread?",
        "And butter?",
        "And jam?",
        "And tea?",
    ]
    .iter()
    .enumerate()
    {
        chat.send(question);
        chat.wait_for_prompts(i + 2);
        refused |= chat.stderr().contains("error: the conversation needs");
    }
    assert!(refused, "{}", chat.stderr());
    assert!(!chat.stderr().contains("dropped the oldest"));
    drop(chat.stdin.take());
    assert_eq!(chat.wait_exit(), 0);
}

//! Ctrl-C as an event instead of the end of the process: while a reply is being generated it
//! asks the generation to stop; at an empty prompt the first press says how to leave and the
//! second leaves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use anyhow::{Context as _, Result};

const BUSY: u8 = 0;
const PROMPT: u8 = 1;
const PROMPT_ARMED: u8 = 2;

/// The state a SIGINT handler thread shares with the command that installed it.
#[derive(Debug)]
pub struct Interrupt {
    mode: AtomicU8,
    pressed: AtomicBool,
}

impl Interrupt {
    /// Installs the handler: from now on Ctrl-C no longer ends the process by itself.
    pub fn install() -> Result<Arc<Self>> {
        let shared = Arc::new(Self {
            mode: AtomicU8::new(BUSY),
            pressed: AtomicBool::new(false),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("cannot start the Ctrl-C handler")?;
        // Registering before the thread starts, so a press right after this returns is caught.
        let mut signals = runtime
            .block_on(async {
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            })
            .context("cannot catch Ctrl-C")?;
        let handler = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("ferrolm-ctrl-c".into())
            .spawn(move || {
                runtime.block_on(async {
                    while signals.recv().await.is_some() {
                        handler.on_press();
                    }
                });
            })
            .context("cannot start the Ctrl-C handler")?;
        Ok(shared)
    }

    fn on_press(&self) {
        match self.mode.load(Ordering::SeqCst) {
            PROMPT => {
                self.mode.store(PROMPT_ARMED, Ordering::SeqCst);
                eprint!("\n(Ctrl-C again or Ctrl-D to leave, /help for commands)\n> ");
            }
            PROMPT_ARMED => {
                eprintln!();
                std::process::exit(0);
            }
            _ => {
                // A second press while the first is still unanswered leaves at once.
                if self.pressed.swap(true, Ordering::SeqCst) {
                    eprintln!("\n(interrupted)");
                    std::process::exit(130);
                }
            }
        }
    }

    /// Marks the start of work that a press should stop (a reply, a generation).
    pub fn busy(&self) {
        self.pressed.store(false, Ordering::SeqCst);
        self.mode.store(BUSY, Ordering::SeqCst);
    }

    /// Marks waiting at a prompt: a press there says how to leave, a second one leaves.
    pub fn at_prompt(&self) {
        self.mode.store(PROMPT, Ordering::SeqCst);
    }

    /// Whether Ctrl-C was pressed since [`Interrupt::busy`].
    pub fn pressed(&self) -> bool {
        self.pressed.load(Ordering::SeqCst)
    }
}

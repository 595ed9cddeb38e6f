//! Replaying a whole decode step as one CUDA graph.
//!
//! A token step is the same list of kernel launches every time (buffers preallocated, positions
//! and token ids read from device memory), so it is recorded once while it runs normally and
//! then captured as a graph from that list. On the next step the launches are matched one by one
//! against the recording instead of being issued; when all of them match, one graph launch runs
//! the whole step. A launch that differs (another buffer, another shape) ends the replay: the
//! launches matched so far are issued as they were, and the rest of the step runs and is recorded
//! anew. Work that is not a kernel launch (copies, cuBLAS) makes a recording unusable as a graph.

use std::sync::{Mutex, MutexGuard, PoisonError};

use cudarc::driver::LaunchConfig;

use super::launch::Arg;
use super::{CudaDevice, CudaError, DeviceGraph};

/// One recorded kernel launch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Launch {
    pub(crate) kernel: &'static str,
    pub(crate) grid: (u32, u32, u32),
    pub(crate) block: (u32, u32, u32),
    pub(crate) shared: u32,
    pub(crate) args: Vec<Arg>,
}

impl Launch {
    pub(crate) fn new(kernel: &'static str, cfg: &LaunchConfig, args: &[Arg]) -> Self {
        Self {
            kernel,
            grid: cfg.grid_dim,
            block: cfg.block_dim,
            shared: cfg.shared_mem_bytes,
            args: args.to_vec(),
        }
    }

    fn matches(&self, kernel: &str, cfg: &LaunchConfig, args: &[Arg]) -> bool {
        self.kernel == kernel
            && self.grid == cfg.grid_dim
            && self.block == cfg.block_dim
            && self.shared == cfg.shared_mem_bytes
            && self.args == args
    }

    pub(crate) fn config(&self) -> LaunchConfig {
        LaunchConfig {
            grid_dim: self.grid,
            block_dim: self.block,
            shared_mem_bytes: self.shared,
        }
    }
}

/// The launches of one step and the graph that replays them.
pub struct StepGraph {
    launches: Vec<Launch>,
    graph: DeviceGraph,
}

impl std::fmt::Debug for StepGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepGraph")
            .field("kernels", &self.launches.len())
            .finish_non_exhaustive()
    }
}

impl StepGraph {
    /// Kernel launches in the graph.
    pub fn len(&self) -> usize {
        self.launches.len()
    }

    /// Whether the graph holds no launch (never true of a built one).
    pub fn is_empty(&self) -> bool {
        self.launches.is_empty()
    }

    /// Queues one replay of the whole step.
    pub fn launch(&self) -> Result<(), CudaError> {
        self.graph.launch()
    }
}

/// What [`CudaDevice::end_step`] did.
#[derive(Debug)]
pub enum StepOutcome {
    /// Every launch matched the graph, which has now been launched once.
    Replayed(StepGraph),
    /// The step ran launch by launch; here is the graph built from it, or `None` when the step
    /// did work that a graph of kernels cannot hold.
    Recorded(Option<StepGraph>),
    /// The step ran launch by launch, but capturing it as a graph failed: the step's results
    /// are complete; graphs are not usable here.
    CaptureFailed(CudaError),
}

#[derive(Debug, Default)]
pub(crate) enum StepMode {
    /// Launches go straight to the stream.
    #[default]
    Eager,
    /// Launches go to the stream and are remembered.
    Record {
        launches: Vec<Launch>,
        complete: bool,
    },
    /// Launches are compared with the graph's and held back while they match.
    Replay { graph: StepGraph, cursor: usize },
}

/// The device's step state, behind a lock because the device is shared by reference.
#[derive(Debug, Default)]
pub(crate) struct StepState(Mutex<StepMode>);

impl StepState {
    pub(crate) fn lock(&self) -> MutexGuard<'_, StepMode> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl CudaDevice {
    /// Starts a decode step: with `replay`, launches are matched against that graph and held
    /// back; without, they run and are recorded. [`CudaDevice::end_step`] finishes it.
    pub fn begin_step(&self, replay: Option<StepGraph>) {
        *self.step.lock() = match replay {
            Some(graph) => StepMode::Replay { graph, cursor: 0 },
            None => StepMode::Record {
                launches: Vec::new(),
                complete: true,
            },
        };
    }

    /// Finishes the step begun by [`CudaDevice::begin_step`]: launches the graph when every
    /// launch matched it, else builds a graph from what ran.
    pub fn end_step(&self) -> Result<StepOutcome, CudaError> {
        let mode = std::mem::take(&mut *self.step.lock());
        let (launches, complete) = match mode {
            StepMode::Eager => return Ok(StepOutcome::Recorded(None)),
            StepMode::Replay { graph, cursor } if cursor == graph.launches.len() => {
                graph.graph.launch()?;
                return Ok(StepOutcome::Replayed(graph));
            }
            StepMode::Replay { graph, cursor } => {
                // The step ended early (an error, or a shorter step): issue what was held back.
                let mut launches = graph.launches;
                launches.truncate(cursor);
                self.relaunch_all(&launches)?;
                (launches, true)
            }
            StepMode::Record { launches, complete } => (launches, complete),
        };
        if !complete || launches.is_empty() {
            return Ok(StepOutcome::Recorded(None));
        }
        match self.capture(|dev| dev.relaunch_all(&launches)) {
            Ok(graph) => Ok(StepOutcome::Recorded(Some(StepGraph { launches, graph }))),
            Err(e) => Ok(StepOutcome::CaptureFailed(e)),
        }
    }

    /// Called before queuing work that is not a kernel launch: a graph of the step could not
    /// hold it, and launches held back by a replay must go first.
    pub(crate) fn untracked_work(&self) -> Result<(), CudaError> {
        let mut mode = self.step.lock();
        match &mut *mode {
            StepMode::Eager => Ok(()),
            StepMode::Record { complete, .. } => {
                *complete = false;
                Ok(())
            }
            StepMode::Replay { .. } => {
                let launches = self.diverge(&mut mode)?;
                *mode = StepMode::Record {
                    launches,
                    complete: false,
                };
                Ok(())
            }
        }
    }

    /// Decides what to do with a launch about to be queued: `true` when it must be issued now.
    pub(crate) fn track_launch(
        &self,
        kernel: &'static str,
        cfg: &LaunchConfig,
        args: &[Arg],
    ) -> Result<bool, CudaError> {
        let mut mode = self.step.lock();
        let matched = match &mut *mode {
            StepMode::Eager => return Ok(true),
            StepMode::Record { launches, .. } => {
                launches.push(Launch::new(kernel, cfg, args));
                return Ok(true);
            }
            StepMode::Replay { graph, cursor } => {
                let matched = graph
                    .launches
                    .get(*cursor)
                    .is_some_and(|l| l.matches(kernel, cfg, args));
                if matched {
                    *cursor += 1;
                }
                matched
            }
        };
        if matched {
            return Ok(false);
        }
        let mut launches = self.diverge(&mut mode)?;
        launches.push(Launch::new(kernel, cfg, args));
        *mode = StepMode::Record {
            launches,
            complete: true,
        };
        Ok(true)
    }

    /// Ends a replay: issues the launches matched so far and returns them.
    fn diverge(&self, mode: &mut StepMode) -> Result<Vec<Launch>, CudaError> {
        let StepMode::Replay { graph, cursor } = std::mem::take(mode) else {
            return Ok(Vec::new());
        };
        let mut launches = graph.launches;
        launches.truncate(cursor);
        self.relaunch_all(&launches)?;
        Ok(launches)
    }
}

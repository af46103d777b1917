//! Process-safe FIFO queues in shared memory: [`Queue`], [`SimpleQueue`], [`JoinableQueue`].

mod ring;

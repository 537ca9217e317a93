//! A thread fed filled blocks through a bounded channel, which works on each (encrypts it, writes
//! it) and hands it back for reuse: the one mechanism behind the packer's encryption threads and
//! the folder backend's writing thread.

use crossbeam_channel::{bounded, Receiver, Sender};
use std::thread::JoinHandle;

/// The caller's end: empty blocks out, filled blocks in, at most `blocks` in circulation.
pub struct Pipe<B, S, E> {
    tx: Option<Sender<B>>,
    back: Receiver<B>,
    thread: Option<JoinHandle<Result<S, E>>>,
    spare: Vec<B>,
    allocated: usize,
    blocks: usize,
}

impl<B: Send + 'static, S: Send + 'static, E: Send + 'static> Pipe<B, S, E> {
    /// Start a thread named `name` that owns `sink` and runs `work` on every block sent, in
    /// order, until the caller joins or `work` fails. `spare` are empty blocks the caller already
    /// has (they count towards `blocks`).
    pub fn spawn(
        name: &str,
        blocks: usize,
        spare: Vec<B>,
        mut sink: S,
        mut work: impl FnMut(&mut S, &mut B) -> Result<(), E> + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = bounded::<B>(blocks);
        // Never full: no more blocks exist than it holds.
        let (back_tx, back) = bounded(blocks.max(spare.len()));
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                for mut b in rx {
                    work(&mut sink, &mut b)?;
                    let _ = back_tx.try_send(b);
                }
                Ok(sink)
            })?;
        Ok(Pipe {
            tx: Some(tx),
            back,
            thread: Some(thread),
            allocated: spare.len(),
            spare,
            blocks,
        })
    }

    /// An empty block: a spare or returned one, a new one from `make` while fewer than `blocks`
    /// exist, else the next one the thread hands back. `None`: the thread stopped (`join` tells
    /// why).
    pub fn empty(&mut self, make: impl FnOnce() -> B) -> Option<B> {
        if let Some(b) = self.spare.pop() {
            return Some(b);
        }
        if let Ok(b) = self.back.try_recv() {
            return Some(b);
        }
        if self.allocated < self.blocks {
            self.allocated += 1;
            return Some(make());
        }
        self.back.recv().ok()
    }

    /// Hand a filled block to the thread. False: the thread stopped (`join` tells why).
    pub fn send(&self, block: B) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(block).is_ok())
    }

    /// Let the thread finish the blocks it was given: its sink or its error (`None` if it
    /// panicked), and every empty block, so that a later pipe can reuse them.
    pub fn join(mut self) -> (Option<Result<S, E>>, Vec<B>) {
        self.tx = None;
        let r = self.thread.take().and_then(|t| t.join().ok());
        // After the join: blocks handed back late must not be lost, or a later pipe given these
        // spares would wait for blocks that no longer circulate.
        let mut spare = std::mem::take(&mut self.spare);
        spare.extend(self.back.try_iter());
        (r, spare)
    }
}

impl<B, S, E> Drop for Pipe<B, S, E> {
    fn drop(&mut self) {
        // Abandoned (a failed or interrupted run): the thread ends and drops its sink.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_worked_on_in_order_and_all_come_back() {
        let mut p = Pipe::spawn(
            "test",
            3,
            vec![],
            Vec::new(),
            |out: &mut Vec<u8>, b: &mut Vec<u8>| {
                out.extend_from_slice(b);
                b.clear();
                Ok::<(), String>(())
            },
        )
        .unwrap();
        let mut made = 0;
        for i in 0..100u8 {
            let mut b = p
                .empty(|| {
                    made += 1;
                    Vec::new()
                })
                .unwrap();
            b.push(i);
            assert!(p.send(b));
        }
        let (r, spare) = p.join();
        assert_eq!(r.unwrap().unwrap(), (0..100).collect::<Vec<u8>>());
        assert!(made <= 3, "at most 3 blocks in circulation, made {made}");
        assert_eq!(spare.len(), made);
        // A later pipe given the spares makes no new block.
        let mut p = Pipe::spawn("test", 3, spare, (), |_: &mut (), _: &mut Vec<u8>| {
            Ok::<(), String>(())
        })
        .unwrap();
        for _ in 0..10 {
            let b = p.empty(|| panic!("the spares suffice")).unwrap();
            assert!(p.send(b));
        }
        assert!(matches!(p.join(), (Some(Ok(())), _)));
    }

    #[test]
    fn a_failure_stops_the_pipe_and_is_returned() {
        let mut p = Pipe::spawn("test", 2, vec![], 0u32, |n: &mut u32, _: &mut Vec<u8>| {
            *n += 1;
            if *n == 3 {
                Err("disk full")
            } else {
                Ok(())
            }
        })
        .unwrap();
        let mut stopped = false;
        for _ in 0..50 {
            if !p.empty(Vec::new).is_some_and(|b| p.send(b)) {
                stopped = true;
                break;
            }
        }
        assert!(stopped, "the caller learns that the thread stopped");
        assert!(matches!(p.join(), (Some(Err("disk full")), _)));
    }
}

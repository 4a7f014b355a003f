//! One recurrence shared by several threads, step by step: each thread computes its range of a
//! step's columns, and all meet at a barrier before the next step (which reads the whole of the
//! previous one). What scoring a single stream (`elman eval`'s exact likelihood) runs when there
//! are more threads than streams; a cell's forward pass supplies the per-step work.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A barrier for a few threads that meet every few microseconds (one recurrence step): spins
/// briefly, then yields (a condition variable's wake-up costs as much as the step). A thread
/// that panics poisons it (`Poison`), so the others panic too instead of waiting forever.
pub(crate) struct SpinBarrier {
    parties: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    poisoned: AtomicBool,
}

/// Poisons the barrier if dropped while its thread unwinds from a panic.
pub(crate) struct Poison<'a>(pub(crate) &'a SpinBarrier);

impl Drop for Poison<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poisoned.store(true, Ordering::Release);
        }
    }
}

impl SpinBarrier {
    pub(crate) fn new(parties: usize) -> SpinBarrier {
        SpinBarrier {
            parties,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        }
    }

    pub(crate) fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if self.poisoned.load(Ordering::Acquire) {
                panic!("another scoring thread panicked");
            }
            if spins < 2000 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// A buffer the threads of [`by_columns`] write into, each its own columns of a step.
pub struct SharedBuf(*mut f32);
// SAFETY: the threads write disjoint columns of one step and read the previous step only after
// the barrier that ends it (the contract of `by_columns`' `step`).
unsafe impl Sync for SharedBuf {}

impl SharedBuf {
    pub fn ptr(&self) -> *mut f32 {
        self.0
    }
}

/// Runs `step(buf, t, part)` for t = 0 … t_len − 1 on `parts` threads (part 0 on the caller's),
/// with a barrier after every step. `step` must write only its own part's columns of step t and
/// read step t − 1 (complete, since the barrier ended it) or its own writes.
pub fn by_columns(
    buf: &mut [f32],
    parts: usize,
    t_len: usize,
    step: impl Fn(&SharedBuf, usize, usize) + Sync,
) {
    let barrier = SpinBarrier::new(parts);
    let shared = SharedBuf(buf.as_mut_ptr());
    let run = |i: usize| {
        let _poison = Poison(&barrier);
        for t in 0..t_len {
            step(&shared, t, i);
            barrier.wait();
        }
    };
    std::thread::scope(|sc| {
        for i in 1..parts {
            let run = &run;
            sc.spawn(move || run(i));
        }
        run(0);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_party_poisons_the_spin_barrier_instead_of_hanging_the_others() {
        let barrier = SpinBarrier::new(2);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::thread::scope(|sc| {
                sc.spawn(|| {
                    let _poison = Poison(&barrier);
                    panic!("a bug in one thread");
                });
                let _poison = Poison(&barrier);
                barrier.wait();
            })
        }));
        assert!(
            result.is_err(),
            "the waiting thread must not return normally"
        );
        // And without a panic the barrier just lets both through, twice.
        let barrier = SpinBarrier::new(2);
        std::thread::scope(|sc| {
            sc.spawn(|| {
                barrier.wait();
                barrier.wait();
            });
            barrier.wait();
            barrier.wait();
        });
    }
}

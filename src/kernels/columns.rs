//! One recurrence shared by several threads, step by step: each thread computes its range of a
//! step's columns, and all meet at a barrier before the next step (which reads the whole of the
//! previous one). What scoring a single stream (`elman eval`'s exact likelihood) runs when there
//! are more threads than streams; a cell's forward pass supplies the per-step work.

use super::packed::{self, PackedB, NR};
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
    /// Another buffer for the threads of [`by_columns`] to share under the same contract (an
    /// LSTM's gates and cell states beside its h).
    pub fn new(buf: &mut [f32]) -> SharedBuf {
        SharedBuf(buf.as_mut_ptr())
    }

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
    if parts == 1 {
        run(0);
        return;
    }
    team(parts - 1).in_place_scope(|sc| {
        for i in 1..parts {
            let run = &run;
            sc.spawn(move |_| run(i));
        }
        run(0);
    });
}

thread_local! {
    /// One stream's gate columns for a thread's units in [`by_units`].
    static PART_GATES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A gated cell's scoring recurrence over `t_len` steps of `b` streams, each step's units split
/// over `parts` threads that meet after every step (step t + 1 reads all of h_t), as
/// [`by_columns`] splits the Elman cell's columns. W (`w`, H × blocks·H) holds `blocks` gate
/// blocks of H columns; `gates` holds each step's products (row stride `ldc`, a slot per step
/// when `ready`: the input term is already there and the product adds to it; else one slot,
/// overwritten). A thread's units u0..u0 + n are whole panels of every block (H a multiple of
/// `packed::NR`): it computes their gate columns, gathers them side by side (block by block, n
/// each, then `extra` blocks of scratch for the cell) and calls `point(t, j, u0, gathered, h_t
/// row j, its units of h_{t+1} row j)` for each stream j, which must touch nothing of another
/// thread's units.
#[allow(clippy::too_many_arguments)]
pub fn by_units(
    states: &mut [f32],
    gates: &mut [f32],
    (b, h, t_len): (usize, usize, usize),
    (w, blocks, extra, ldc): (&PackedB, usize, usize, usize),
    ready: bool,
    parts: usize,
    point: impl Fn(usize, usize, usize, &mut [f32], &[f32], &mut [f32]) + Sync,
) {
    let bh = b * h;
    let panels = h / NR;
    assert!(h % NR == 0 && w.k() == h && w.n() == blocks * h && ldc >= blocks * h);
    assert!(states.len() >= (t_len + 1) * bh);
    assert!(gates.len() >= if ready { t_len } else { 1 } * b * ldc);
    let gates = SharedBuf::new(gates);
    by_columns(states, parts, t_len, |states, t, i| {
        let (p0, p1) = (panels * i / parts, panels * (i + 1) / parts);
        let (u0, n) = (p0 * NR, (p1 - p0) * NR);
        if n == 0 {
            return;
        }
        let slot = if ready { t } else { 0 };
        PART_GATES.with(|part| {
            let mut part = part.borrow_mut();
            part.resize((blocks + extra) * n, 0.0);
            // SAFETY: rows t (read) and t + 1 (written) of `states` and the gates' slot are
            // inside their buffers (the asserts above). In step t this thread writes only its
            // units' columns of each gate block of the slot and of row t + 1 of `states`; it
            // reads back its own gate columns and all of row t, which every thread completed
            // before the barrier that ended step t − 1.
            unsafe {
                let prev = std::slice::from_raw_parts(states.ptr().add(t * bh), bh);
                let gt = gates.ptr().add(slot * b * ldc);
                for block in 0..blocks {
                    let range = block * panels + p0..block * panels + p1;
                    packed::matmul_columns(b, gt, ldc, ready, prev, h, w, range);
                }
                for j in 0..b {
                    for block in 0..blocks {
                        let src = gt.add(j * ldc + block * h + u0);
                        part[block * n..(block + 1) * n]
                            .copy_from_slice(std::slice::from_raw_parts(src, n));
                    }
                    let out = states.ptr().add((t + 1) * bh + j * h + u0);
                    let out = std::slice::from_raw_parts_mut(out, n);
                    point(t, j, u0, &mut part, &prev[j * h..(j + 1) * h], out);
                }
            }
        });
    });
}

/// The helper threads of [`by_columns`], `helpers` of them, kept for the life of the process (one
/// team per size, made on first use). Threads spawned afresh for every window started on their
/// parent's core on this project's 2-core machines and stayed there while the window's steps
/// met at the barrier: the two parts ran one at a time, ~155 µs per step meeting instead of
/// ~0.3 µs, and `elman eval` of one stream with two threads took 12× as long as with one.
/// Threads that persist between windows sleep where they last ran and are woken there. Each
/// part of a window is one job of the team's, and the team has a thread for every helper part,
/// so all parts run at once (a second caller's window waits for the first's to finish).
pub(crate) fn team(helpers: usize) -> &'static rayon::ThreadPool {
    use std::sync::{Mutex, OnceLock};
    static TEAMS: OnceLock<Mutex<Vec<(usize, &'static rayon::ThreadPool)>>> = OnceLock::new();
    let mut teams = TEAMS
        .get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, t)) = teams.iter().find(|(n, _)| *n == helpers) {
        return t;
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(helpers)
        .thread_name(|i| format!("elman-columns-{i}"))
        .build()
        .expect("the scoring threads could not be started");
    let t: &'static rayon::ThreadPool = Box::leak(Box::new(pool));
    teams.push((helpers, t));
    t
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

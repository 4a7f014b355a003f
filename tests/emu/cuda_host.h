// Just enough of CUDA to run src/kernels/cuda/scan.cu on the CPU, one OS thread per CUDA thread,
// so that tests/scan_emulated.rs can hold the kernels' index arithmetic, their warp reductions and
// their grid barrier to the plain loops of kernels/scan.rs on a machine without a GPU. Not a CUDA
// implementation: only what scan.cu uses, with the same meaning.
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__

struct dim3 { unsigned x = 1, y = 1, z = 1; };
static dim3 blockDim, gridDim;
static thread_local dim3 threadIdx, blockIdx;

// What each emulated block and warp shares.
struct EmuBlock {
    std::barrier<> *block;            // __syncthreads
    std::vector<std::barrier<> *> warps;
    std::vector<float> shuffle;       // one slot per thread
    std::vector<float> shared;        // dynamic shared memory
};
static thread_local EmuBlock *emu_block;

static inline float *emu_shared() { return emu_block->shared.data(); }
static inline void __syncthreads() { emu_block->block->arrive_and_wait(); }
static inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
static inline void __nanosleep(unsigned) { std::this_thread::yield(); }
static inline float __ldcg(const float *p) {
    return std::atomic_ref<float>(*const_cast<float *>(p)).load(std::memory_order_acquire);
}
#define __expf(x) std::exp(x)
static inline unsigned atomicAdd(unsigned *p, unsigned v) {
    return std::atomic_ref<unsigned>(*p).fetch_add(v, std::memory_order_seq_cst);
}
static inline unsigned atomicExch(unsigned *p, unsigned v) {
    return std::atomic_ref<unsigned>(*p).exchange(v, std::memory_order_seq_cst);
}
// Every lane of the warp calls it together, as scan.cu's reductions do.
static inline float __shfl_down_sync(unsigned, float v, int off) {
    unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float *slots = emu_block->shuffle.data() + warp * 32;
    slots[lane] = v;
    emu_block->warps[warp]->arrive_and_wait();
    float got = lane + off < 32 ? slots[lane + off] : v;
    emu_block->warps[warp]->arrive_and_wait();
    return got;
}
using std::min;

// The grid barrier's generation word, which scan.cu reads through a volatile pointer (the test
// puts this type in its place): an atomic read here.
struct EmuAtomicPtr {
    unsigned *p;
    EmuAtomicPtr(unsigned *q) : p(q) {}
    unsigned operator*() const { return std::atomic_ref<unsigned>(*p).load(std::memory_order_seq_cst); }
};

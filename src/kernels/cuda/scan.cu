// The plain recurrence over a whole window as one persistent kernel (kernels/scan.rs has the
// plain loops it is held to, and the launch arithmetic, tested on the CPU):
//
//   forward   S_t = act(P_t + S_{t-1} M^T)             t = 0 .. T-1, S_{-1} = h0
//   backward  D_t = act'(S_t) * (G_t + D_{t+1} M)      t = T-1 .. 0, D_T = 0
//
// The backward is the forward run backwards in time on M^T (passed transposed, so both read rows)
// with the derivative in place of act: one body for both.
//
// Why persistent (Baidu's persistent RNN, cuDNN's persistent algorithms): a step's product is
// small (B x H x H), so T launches of it are bound by launch latency and by reading M from memory
// T times. Here each block owns `rows` units, loads their rows of M into shared memory once, and
// loops over the T steps, meeting the other blocks at a grid barrier between steps. The host
// launches at most one block per multiprocessor, so every block is resident and the barrier
// cannot deadlock.

#include <stdint.h>

__device__ __forceinline__ float act_fwd(int act, float a) {
    switch (act) {
    case 0: return tanhf(a);
    case 1: return 1.0f / (1.0f + __expf(-a));
    default: return fmaxf(a, 0.0f);
    }
}

// act' from act's output.
__device__ __forceinline__ float act_slope(int act, float s) {
    switch (act) {
    case 0: return 1.0f - s * s;
    case 1: return s * (1.0f - s);
    default: return s > 0.0f ? 1.0f : 0.0f;
    }
}

// All blocks wait here until every block has arrived. sync[0] counts arrivals, sync[1] is the
// generation, bumped by the last block to arrive; both start at 0 (the host zeroes them).
__device__ __forceinline__ void grid_barrier(unsigned int *sync, unsigned int blocks) {
    __syncthreads();
    if (threadIdx.x == 0) {
        volatile unsigned int *gen = sync + 1;
        unsigned int g = *gen;
        // This block's writes of the step are visible before it counts itself in.
        __threadfence();
        if (atomicAdd(sync, 1u) == blocks - 1) {
            atomicExch(sync, 0u);
            __threadfence();
            atomicAdd(sync + 1, 1u);
        } else {
            while (*gen == g) {
                __nanosleep(20);
            }
        }
        __threadfence();
    }
    __syncthreads();
}

// in:   forward P, backward G              (T, B, H)
// m:    forward M, backward M^T            (H, H) row-major
// h0:   forward the first state (B, H); unused backward
// s:    backward the states S (T, B, H); unused forward
// out:  forward S, backward D              (T, B, H)
// sync: two words, zeroed
extern "C" __global__ void elman_scan(const float *__restrict__ in, const float *__restrict__ m,
                                      const float *__restrict__ h0, const float *__restrict__ s,
                                      float *out, unsigned int *sync, int T, int B, int H,
                                      int rows, int act, int backward, int use_shared) {
    extern __shared__ float m_rows[];
    const int j0 = blockIdx.x * rows;
    const int nrows = min(rows, H - j0);
    if (nrows <= 0) {
        // Never launched so (the host sizes the grid to the units), but a block that returned
        // early would leave the others at the barrier forever: take part in every barrier.
        for (int n = 0; n + 1 < T; ++n) grid_barrier(sync, gridDim.x);
        return;
    }
    if (use_shared) {
        for (int x = threadIdx.x; x < nrows * H; x += blockDim.x) m_rows[x] = m[(size_t)j0 * H + x];
        __syncthreads();
    }
    const float *my_m = use_shared ? m_rows : m + (size_t)j0 * H;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    const size_t step = (size_t)B * H;

    for (int n = 0; n < T; ++n) {
        const int t = backward ? T - 1 - n : n;
        // The previous step in the scan's direction; none before the first backward step.
        const float *prev = n == 0 ? (backward ? nullptr : h0) : out + (size_t)(backward ? t + 1 : t - 1) * step;
        for (int item = warp; item < B * nrows; item += warps) {
            const int i = item / nrows;
            const int jj = item - i * nrows;
            float acc = 0.0f;
            if (prev != nullptr) {
                const float *row = my_m + (size_t)jj * H;
                const float *p = prev + (size_t)i * H;
                // Other blocks wrote `prev` during the last step: read it through L2 (__ldcg),
                // never from a stale L1 line.
                for (int k = lane; k < H; k += 32) acc += row[k] * __ldcg(p + k);
            }
            for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
            if (lane == 0) {
                const size_t at = (size_t)t * step + (size_t)i * H + j0 + jj;
                out[at] = backward ? act_slope(act, s[at]) * (in[at] + acc) : act_fwd(act, in[at] + acc);
            }
        }
        if (n + 1 < T) grid_barrier(sync, gridDim.x);
    }
}
